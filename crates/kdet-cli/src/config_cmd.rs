//! `kdet config`: resolved experiments (a preset, or a file with its `extends` chain,
//! defaults and `--set` overrides), the names of the presets and shipped configs, and the
//! distillation methods (for scripts).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kdet_distill::KdLossConfig;
use kdet_run::presets::{PRESET_NAMES, resolved};
use kdet_run::{Experiment, Override};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print an experiment as complete TOML: a named preset (what `configs/NAME.toml`
    /// holds, without its comments) or a file after parsing, defaults, overrides and
    /// validation.
    Print(PrintArgs),
    /// List the preset names.
    Presets,
    /// List the configs shipped in the binary (`--config configs/NAME` finds them from any
    /// folder when no such file is there; `builtin:NAME` always does).
    Shipped,
    /// List the distillation methods (`loss = { type = "..." }`), one per line.
    Methods,
}

/// `--set KEY=VALUE`, flattened into every command that reads an experiment.
#[derive(Args, Debug, Clone, Default)]
pub struct SetArgs {
    /// Override a key of the experiment (repeatable, applied in order after its `extends`
    /// chain): a dotted path, numbers index lists (`distill.losses.0.weight=0.5`,
    /// `train.seed=3`, `data.synth.root=data/x`); the value is TOML (`3`, `"x"`, `[1, 2]`,
    /// `{ type = "ld" }`), a bare word a string. Unknown keys are errors.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl SetArgs {
    /// The parsed overrides.
    pub fn overrides(&self) -> Result<Vec<Override>> {
        Override::parse_all(&self.set)
    }
}

#[derive(Args, Debug)]
pub struct PrintArgs {
    /// A preset name (see `kdet config presets`).
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    preset: Option<String>,
    /// An experiment file (or a shipped config's name).
    #[arg(long, value_name = "EXPERIMENT.toml")]
    config: Option<PathBuf>,
    #[command(flatten)]
    set: SetArgs,
}

pub fn run(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Presets => PRESET_NAMES.iter().for_each(|n| println!("{n}")),
        ConfigCommand::Shipped => kdet_run::shipped::config_names().for_each(|n| println!("{n}")),
        ConfigCommand::Methods => KdLossConfig::METHODS.iter().for_each(|m| println!("{m}")),
        ConfigCommand::Print(a) => {
            let overrides = a.set.overrides()?;
            let experiment = match (&a.preset, &a.config) {
                (Some(_), _) if !overrides.is_empty() => {
                    bail!("--set applies to --config files (a preset prints as it is)")
                }
                (Some(name), _) => resolved(name)?,
                (None, Some(path)) => Experiment::load_with(path, &overrides)?,
                (None, None) => bail!("give --preset NAME or --config FILE"),
            };
            print!("{}", experiment.to_toml()?);
        }
    }
    Ok(())
}
