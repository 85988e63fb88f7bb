//! From experiment files to one document: the `extends` chain, `--set` overrides, the
//! defaults under every section, files of earlier kdet versions, and unknown keys.
//!
//! 1. **`extends`.** A file may start from another one: `extends = "other.toml"`
//!    (relative to the file's folder; `builtin:NAME` names a config shipped in the
//!    binary, e.g. `builtin:distill/ld_gfl_synth.toml`) takes that file's tables and
//!    overrides them key by key, as mmdetection's `_base_`: tables merge recursively,
//!    everything else (arrays included) is replaced. A table whose `type` differs from the
//!    base's replaces it (`optimizer = { type = "sgd" }` over an AdamW base is SGD with
//!    SGD's defaults, not a mix), and so do a tagged choice of another kind
//!    (`[data.coco]` over a `synth` base, `teacher.weights` over `teacher.checkpoint`) and
//!    a duration (`total = { iterations = 60 }` over `{ epochs = 16 }`).
//! 2. **`--set KEY=VALUE`** (repeatable, in order) then changes the merged document, as
//!    detectron2's `opts` and mmdetection's `--cfg-options`. `KEY` is a dotted path
//!    (`train.seed`, `model.neck.out_channels`); a number indexes a list, 0-based
//!    (`distill.losses.0.weight`), and the index equal to the list's length appends an
//!    element. `VALUE` is a TOML value (`3`, `0.5`, `true`, `"text"`, `[1, 2]`,
//!    `{ type = "ld" }`); a bare word that is not one is taken as a string
//!    (`--set data.synth.root=data/x` is `"data/x"`). Tables given as a value replace the
//!    table there; keys set one by one merge into it.
//! 3. **Defaults.** Every section has them, so a file lists only what differs: `[data]`,
//!    `[data.loader]`, `[train]`, `[eval]`, `[distill]` and each recipe entry through
//!    their types' serde defaults; `[model]` (burn `Config`s have no serde defaults)
//!    through the official configs, merged here under the file's keys: the backbone by
//!    its `type` (default `resnet`: torchvision ResNet-50; `mobilenet_v2`: torchvision's;
//!    `small_resnet` has no paper and spells its sizes), the head by its `type` (default
//!    `gfl`; each head's mmdetection COCO config, 80 classes), the neck of that head's
//!    mmdetection config, and the test settings' defaults. The head's input channels and
//!    level strides are the neck's outputs' (`DetectorConfig::new`'s rule), unless the
//!    file sets them.
//!    `model.family` chooses the model family (`dense`, the default; `detr`;
//!    `mask2former`): a query family's defaults are its official COCO config
//!    (`DetrConfig::r50`, `Mask2FormerConfig::r50`, 80 classes), merged the same way.
//! 4. **Unknown keys** are errors naming their dotted path (`model.neck.out_chanels`,
//!    `distill.losses[0].wieght`), also where a serde type would ignore them (burn
//!    `Config`s do): the document is compared with the parsed experiment serialised again.
//!
//! Files (and stored runs) of earlier kdet versions are read as before: `teacher = "PATH"`
//! becomes `teacher.checkpoint`, or with `teacher_model` / `teacher_source`,
//! `teacher.weights`; the COCO paths directly under `[data]` become `[data.coco]`.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use kdet_models::backbone::{BackboneConfig, MobileNetV2Config, ResNetConfig};
use kdet_models::heads::atss::AtssHeadConfig;
use kdet_models::heads::fcos::FcosHeadConfig;
use kdet_models::heads::gfl::GflHeadConfig;
use kdet_models::heads::inference::TestConfig;
use kdet_models::heads::retina::RetinaHeadConfig;
use kdet_models::neck::FpnConfig;
use kdet_models::output::FeatureSpec;
use kdet_models::query::{DetrConfig, Mask2FormerConfig};
use kdet_models::{DetectorConfig, HeadConfig, ModelConfig};
use serde_json::{Map, Value};

use crate::experiment::is_weights_file;
use crate::shipped;

/// An experiment file: on disk, or one of the `configs/` shipped in the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    Disk(PathBuf),
    /// The name under `configs/`, e.g. `distill/ld_gfl_synth.toml`.
    Shipped(&'static str),
}

/// The prefix that names a shipped config explicitly.
pub const BUILTIN: &str = "builtin:";

impl ConfigFile {
    /// `path` on disk when it exists; otherwise the shipped config it names
    /// (`configs/NAME.toml`, `NAME.toml` or `builtin:NAME.toml`), so that an installed
    /// `kdet` runs the README's commands from any folder.
    pub fn find(path: &Path) -> Result<Self> {
        let text = path.to_string_lossy();
        if let Some(name) = text.strip_prefix(BUILTIN) {
            return shipped::config(name)
                .map(|(name, _)| ConfigFile::Shipped(name))
                .with_context(|| unknown_builtin(name));
        }
        if path.exists() {
            return Ok(ConfigFile::Disk(path.to_path_buf()));
        }
        let name = text.strip_prefix("configs/").unwrap_or(&text);
        if let Some((name, _)) = shipped::config(name) {
            return Ok(ConfigFile::Shipped(name));
        }
        Ok(ConfigFile::Disk(path.to_path_buf()))
    }

    /// The file's text.
    pub fn text(&self) -> Result<String> {
        match self {
            ConfigFile::Disk(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading the experiment config {}", p.display())),
            ConfigFile::Shipped(name) => shipped::config(name)
                .map(|(_, text)| text.to_string())
                .with_context(|| unknown_builtin(name)),
        }
    }

    /// The file `extends = "base"` names.
    fn extends(&self, base: &str) -> Result<ConfigFile> {
        if base.starts_with(BUILTIN) {
            return ConfigFile::find(Path::new(base));
        }
        match self {
            ConfigFile::Disk(p) => Ok(ConfigFile::Disk(
                p.parent().unwrap_or(Path::new(".")).join(base),
            )),
            ConfigFile::Shipped(name) => {
                let joined =
                    normalize(&Path::new(name).parent().unwrap_or(Path::new("")).join(base));
                let joined = joined.to_string_lossy().replace('\\', "/");
                shipped::config(&joined)
                    .map(|(name, _)| ConfigFile::Shipped(name))
                    .with_context(|| unknown_builtin(&joined))
            }
        }
    }

    /// The stem of the file name (`ld_gfl_synth`), for default run directories.
    pub fn stem(&self) -> String {
        let path = match self {
            ConfigFile::Disk(p) => p.as_path(),
            ConfigFile::Shipped(name) => Path::new(name),
        };
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigFile::Disk(p) => write!(f, "{}", p.display()),
            ConfigFile::Shipped(name) => write!(f, "{BUILTIN}{name}"),
        }
    }
}

fn unknown_builtin(name: &str) -> String {
    format!(
        "no shipped config `{name}` (shipped: {})",
        shipped::config_names().collect::<Vec<_>>().join(", ")
    )
}

/// `a/b/../c` -> `a/c` (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The document of `file`: its `extends` chain merged, then `overrides` applied.
pub fn load(file: &ConfigFile, overrides: &[Override]) -> Result<Map<String, Value>> {
    let mut document = load_extended(file, 0)?;
    for o in overrides {
        o.apply(&mut document)?;
    }
    Ok(document)
}

/// TOML text of one file (no `extends`) as a document.
pub fn parse_toml(text: &str) -> Result<Map<String, Value>> {
    let table: toml::Table = toml::from_str(text)?;
    let mut map = to_json(table)?;
    if map.remove("extends").is_some() {
        bail!("`extends` needs a file (the text was given without one)");
    }
    upgrade(map)
}

fn to_json(table: toml::Table) -> Result<Map<String, Value>> {
    match serde_json::to_value(table).context("converting TOML")? {
        Value::Object(map) => Ok(map),
        _ => unreachable!("a TOML table converts to a JSON object"),
    }
}

fn load_extended(file: &ConfigFile, depth: usize) -> Result<Map<String, Value>> {
    if depth > 8 {
        bail!("{file}: `extends` chains deeper than 8 files (a cycle?)");
    }
    let text = file.text()?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{file}: not valid TOML"))?;
    let mut map = to_json(table).with_context(|| file.to_string())?;
    let base = map.remove("extends");
    let map = upgrade(map).with_context(|| file.to_string())?;
    let Some(base) = base else {
        return Ok(map);
    };
    let Value::String(base) = base else {
        bail!("{file}: `extends` must be a file name");
    };
    let mut merged = file
        .extends(&base)
        .and_then(|b| load_extended(&b, depth + 1))
        .with_context(|| format!("{file}: `extends = \"{base}\"`"))?;
    merge(&mut merged, map, "");
    Ok(merged)
}

/// Tagged choices written as one key among several (serde's external tagging): the
/// section's path and its variants. A document has at most one variant of each.
const CHOICES: [(&str, &[&str]); 2] = [
    ("teacher", &["checkpoint", "weights"]),
    ("data", &["synth", "coco"]),
];

/// The other variants of the choice `key` belongs to, at `path`.
fn rival_variants(path: &str, key: &str) -> &'static [&'static str] {
    CHOICES
        .iter()
        .find(|(p, variants)| *p == path && variants.contains(&key))
        .map_or(&[], |(_, variants)| variants)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `over` on top of `base` (at dotted `path`): tables merge recursively unless their
/// `type`s differ, other values replace; a variant of a tagged choice removes the others.
pub fn merge(base: &mut Map<String, Value>, over: Map<String, Value>, path: &str) {
    for (k, v) in over {
        for rival in rival_variants(path, &k) {
            if *rival != k.as_str() {
                base.remove(*rival);
            }
        }
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(o)) if same_type(b, &o) && !is_duration(&o) => {
                merge(b, o, &join(path, &k))
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A duration (`{ epochs = N }` or `{ iterations = N }`): one value, replaced whole.
fn is_duration(t: &Map<String, Value>) -> bool {
    !t.is_empty() && t.keys().all(|k| k == "epochs" || k == "iterations")
}

fn same_type(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    match (a.get("type"), b.get("type")) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Converts the keys of earlier kdet versions (see the module docs).
pub fn upgrade(mut doc: Map<String, Value>) -> Result<Map<String, Value>> {
    let model = doc.remove("teacher_model");
    let source = doc.remove("teacher_source");
    match doc.get("teacher") {
        Some(Value::String(path)) => {
            let path = path.clone();
            let is_weights = is_weights_file(Path::new(&path));
            let teacher = match (is_weights, model, source) {
                (false, None, None) => serde_json::json!({ "checkpoint": path }),
                (false, _, _) => bail!(
                    "`teacher = \"{path}\"` is a kdet checkpoint, which stores its architecture: `teacher_model` and `teacher_source` are only for .pth / .pt / .safetensors teachers"
                ),
                (true, Some(model), Some(source)) => serde_json::json!({
                    "weights": { "path": path, "model": model, "source": source }
                }),
                (true, model, source) => {
                    let missing: Vec<&str> = [
                        (
                            "`teacher_model = \"TEACHER.toml\"` (a file whose [model] is the teacher)",
                            model.is_none(),
                        ),
                        (
                            "`teacher_source = \"LAYOUT\"` (`kdet`, `mmdet-gfl`, ...)",
                            source.is_none(),
                        ),
                    ]
                    .into_iter()
                    .filter_map(|(k, absent)| absent.then_some(k))
                    .collect();
                    bail!(
                        "`teacher = \"{path}\"` is a weights file: it needs {} (or write `[teacher.weights]` with `path`, `model` and `source`)",
                        missing.join(" and ")
                    )
                }
            };
            doc.insert("teacher".into(), teacher);
        }
        _ if model.is_some() || source.is_some() => bail!(
            "`teacher_model` and `teacher_source` need `teacher = \"WEIGHTS.pth\"` (or write `[teacher.weights]` with `path`, `model` and `source`)"
        ),
        _ => {}
    }
    if let Some(Value::Object(data)) = doc.get_mut("data") {
        let mut coco = Map::new();
        for key in ["train_json", "train_images", "val_json", "val_images"] {
            if let Some(v) = data.remove(key) {
                coco.insert(key.into(), v);
            }
        }
        if !coco.is_empty() {
            if data.contains_key("coco") {
                bail!(
                    "`data.coco` and COCO paths directly under `[data]` (`data.train_json`, ..., as earlier versions wrote them) are exclusive"
                );
            }
            data.insert("coco".into(), Value::Object(coco));
        }
    }
    Ok(doc)
}

/// One data source and one teacher kind, each with its keys (serde's messages for these
/// would not name the choices).
pub fn check_sources(doc: &Map<String, Value>) -> Result<()> {
    if let Some(Value::Object(data)) = doc.get("data") {
        match (data.get("synth"), data.get("coco")) {
            (Some(_), Some(_)) => bail!("`data.synth` and `data.coco` are exclusive"),
            (None, None) => bail!(
                "`[data]` needs a source: `synth = {{ root = ..., seed = ..., train_images = ..., val_images = ... }}` or `coco = {{ train_json = ..., train_images = ..., val_json = ..., val_images = ... }}`"
            ),
            (None, Some(Value::Object(coco))) => {
                let missing: Vec<String> = ["train_json", "train_images", "val_json", "val_images"]
                    .iter()
                    .filter(|k| !coco.contains_key(**k))
                    .map(|k| format!("`data.coco.{k}`"))
                    .collect();
                if !missing.is_empty() {
                    bail!("COCO data needs {} too", missing.join(" and "));
                }
            }
            _ => {}
        }
    }
    if let Some(Value::Object(teacher)) = doc.get("teacher")
        && teacher.contains_key("checkpoint")
        && teacher.contains_key("weights")
    {
        bail!("`teacher.checkpoint` and `teacher.weights` are exclusive");
    }
    Ok(())
}

/// Merges the official model configs under the document's `[model]` (module docs, 3).
pub fn fill_defaults(doc: &mut Map<String, Value>) -> Result<()> {
    let Some(Value::Object(model)) = doc.get_mut("model") else {
        return Ok(());
    };
    let family = match model.get("family") {
        None => "dense".to_string(),
        Some(Value::String(f)) => f.clone(),
        Some(other) => bail!(
            "`model.family` must be a string ({}), got {other}",
            ModelConfig::FAMILIES.join(", ")
        ),
    };
    let query_defaults = match family.as_str() {
        "dense" => None,
        // The official COCO configs (80 classes, ResNet-50); a file changes what differs.
        "detr" => Some(serde_json::to_value(ModelConfig::Detr(DetrConfig::r50(80)))),
        "mask2former" => Some(serde_json::to_value(ModelConfig::Mask2Former(
            Mask2FormerConfig::r50(80),
        ))),
        other => bail!(
            "unknown `model.family = \"{other}\"` (known: {})",
            ModelConfig::FAMILIES.join(", ")
        ),
    };
    if let Some(defaults) = query_defaults {
        let Value::Object(mut defaults) = defaults.context("serialising a default model config")?
        else {
            bail!("a model config serialises to a table");
        };
        merge(&mut defaults, std::mem::take(model), "model");
        *model = defaults;
        return Ok(());
    }
    model.insert("family".into(), Value::String(family));
    let type_of = |key: &str| {
        model
            .get(key)
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let backbone = match type_of("backbone").as_deref().unwrap_or("resnet") {
        "resnet" => Some(BackboneConfig::ResNet(ResNetConfig::resnet50())),
        "mobilenet_v2" => Some(BackboneConfig::MobileNetV2(MobileNetV2Config::new())),
        // SmallResNet has no paper config: its sizes are spelt out. Unknown types are
        // serde's to name.
        _ => None,
    };
    let (head, neck) = match type_of("head").as_deref().unwrap_or("gfl") {
        "gfl" => (
            Some(HeadConfig::Gfl(GflHeadConfig::coco(80))),
            FpnConfig::gfl(),
        ),
        "atss" => (
            Some(HeadConfig::Atss(AtssHeadConfig::coco(80))),
            FpnConfig::gfl(),
        ),
        "fcos" => (
            Some(HeadConfig::Fcos(FcosHeadConfig::coco(80))),
            FpnConfig::fcos(),
        ),
        "retina" => (
            Some(HeadConfig::Retina(RetinaHeadConfig::coco(80))),
            FpnConfig::retinanet(),
        ),
        _ => (None, FpnConfig::gfl()),
    };
    let mut defaults = Map::new();
    let mut put = |key: &str, value: Result<Value, serde_json::Error>| -> Result<()> {
        defaults.insert(
            key.into(),
            value.context("serialising a default model config")?,
        );
        Ok(())
    };
    if let Some(b) = backbone {
        put("backbone", serde_json::to_value(b))?;
    }
    if let Some(h) = head {
        put("head", serde_json::to_value(h))?;
    }
    put("neck", serde_json::to_value(neck))?;
    put("test", serde_json::to_value(TestConfig::new()))?;
    let user = std::mem::take(model);
    let user_head = user.get("head").cloned();
    merge(&mut defaults, user, "model");
    fit_head_to_neck(&mut defaults, user_head);
    *model = defaults;
    Ok(())
}

/// Gives the merged `[model.head]` the input channels and level strides of the neck's
/// outputs (`DetectorConfig::new`'s rule), so no config repeats them; keys the file sets
/// itself stay (`DetectorConfig::validate` then checks they agree with the neck). A
/// backbone, neck or head that does not parse is left alone: parsing the experiment
/// names what is wrong.
fn fit_head_to_neck(model: &mut Map<String, Value>, user_head: Option<Value>) {
    let parsed = || -> Option<(DetectorConfig, Vec<FeatureSpec>)> {
        let part = |key: &str| model.get(key).cloned();
        let config = DetectorConfig {
            backbone: serde_json::from_value(part("backbone")?).ok()?,
            neck: serde_json::from_value(part("neck")?).ok()?,
            head: serde_json::from_value(part("head")?).ok()?,
            test: TestConfig::new(),
        };
        config.backbone.validate().ok()?;
        let inputs = config.backbone.out_specs();
        let neck = &config.neck;
        if inputs.is_empty() || neck.num_outs < inputs.len() || neck.out_channels == 0 {
            return None;
        }
        let specs = config.neck_specs();
        Some((config, specs))
    };
    let Some((mut config, specs)) = parsed() else {
        return;
    };
    config.head.fit_to_neck(&specs);
    let Ok(Value::Object(mut head)) = serde_json::to_value(&config.head) else {
        return;
    };
    if let Some(Value::Object(user)) = user_head {
        merge(&mut head, user, "model.head");
    }
    model.insert("head".into(), Value::Object(head));
}

/// Keys of `document` that `canonical` (the parsed document serialised again) lacks: the
/// keys serde ignored. Dotted paths; array elements as `key[i]`.
pub fn unknown_keys(document: &Value, canonical: &Value) -> Vec<String> {
    fn walk(doc: &Value, canon: &Value, path: &str, out: &mut Vec<String>) {
        match (doc, canon) {
            (Value::Object(d), Value::Object(c)) => {
                for (key, value) in d {
                    let sub = join(path, key);
                    match c.get(key) {
                        Some(cv) => walk(value, cv, &sub, out),
                        None => out.push(sub),
                    }
                }
            }
            (Value::Array(d), Value::Array(c)) => {
                for (i, (dv, cv)) in d.iter().zip(c).enumerate() {
                    walk(dv, cv, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(document, canonical, "", &mut out);
    out
}

/// Where the field or variant that a serde message calls unknown (`` unknown field `x` ``,
/// `` unknown variant `x` ``) is in `doc`: dotted paths, at most 3.
pub fn locate(doc: &Map<String, Value>, message: &str) -> Vec<String> {
    fn quoted<'a>(message: &'a str, after: &str) -> Option<&'a str> {
        let rest = &message[message.find(after)? + after.len()..];
        rest.split('`').next()
    }
    fn walk(
        v: &Value,
        path: &str,
        field: Option<&str>,
        variant: Option<&str>,
        out: &mut Vec<String>,
    ) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let sub = join(path, k);
                    if field == Some(k.as_str()) {
                        out.push(format!("`{sub}`"));
                    }
                    walk(v, &sub, field, variant, out);
                }
            }
            Value::Array(list) => {
                for (i, v) in list.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), field, variant, out);
                }
            }
            Value::String(s) if variant == Some(s.as_str()) => {
                out.push(format!("`{path} = \"{s}\"`"));
            }
            _ => {}
        }
    }
    let field = quoted(message, "unknown field `");
    let variant = quoted(message, "unknown variant `");
    let mut out = Vec::new();
    if field.is_some() || variant.is_some() {
        walk(&Value::Object(doc.clone()), "", field, variant, &mut out);
    }
    out.truncate(3);
    out
}

/// Whether the dotted `key` (numbers index lists) names a value in `doc`.
pub fn has_key(doc: &Map<String, Value>, key: &[String]) -> bool {
    let Some((first, rest)) = key.split_first() else {
        return false;
    };
    let mut current = match doc.get(first) {
        Some(v) => v,
        None => return false,
    };
    for segment in rest {
        current = match current {
            Value::Object(map) => match map.get(segment) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(list) => match segment.parse::<usize>().ok().and_then(|i| list.get(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    true
}

/// One `--set KEY=VALUE` (module docs, 2).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The dotted path, split.
    pub key: Vec<String>,
    pub value: Value,
    text: String,
}

impl FromStr for Override {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((key, raw)) = s.split_once('=') else {
            bail!("`{s}`: expected KEY=VALUE (e.g. train.seed=3)");
        };
        let key = key.trim();
        let segments: Vec<String> = key.split('.').map(|k| k.trim().to_string()).collect();
        if key.is_empty() || segments.iter().any(String::is_empty) {
            bail!(
                "`{s}`: the key must be a dotted path such as `train.seed` or `distill.losses.0.weight`"
            );
        }
        Ok(Override {
            key: segments,
            value: parse_value(raw.trim()).with_context(|| format!("`{s}`"))?,
            text: s.to_string(),
        })
    }
}

/// A TOML value; a bare word that is not one is a string.
fn parse_value(raw: &str) -> Result<Value> {
    if raw.is_empty() {
        bail!("no value (an empty string is `KEY='\"\"'`)");
    }
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => {
            let v = t.remove("v").unwrap_or(toml::Value::Boolean(false));
            serde_json::to_value(v).context("converting the value")
        }
        Err(e) if raw.starts_with(['"', '\'', '[', '{']) => {
            Err(anyhow!("{raw} is not a TOML value: {e}"))
        }
        Err(_) => Ok(Value::String(raw.to_string())),
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Override {
    /// The override of `key` at dotted `path` (one of `overrides`), if any.
    pub fn parse_all(texts: &[String]) -> Result<Vec<Override>> {
        texts.iter().map(|t| t.parse().context("--set")).collect()
    }

    /// Whether this override set `path` (an [`unknown_keys`] path) or a table holding it.
    pub fn names(&self, path: &str) -> bool {
        let path = path.replace('[', ".").replace(']', "");
        let key = self.key.join(".");
        path == key || path.starts_with(&format!("{key}."))
    }

    /// Sets the value in `doc`, creating the tables on the way.
    pub fn apply(&self, doc: &mut Map<String, Value>) -> Result<()> {
        let mut root = Value::Object(std::mem::take(doc));
        let result = self.set(&mut root);
        if let Value::Object(map) = root {
            *doc = map;
        }
        result
    }

    fn set(&self, root: &mut Value) -> Result<()> {
        let mut current = root;
        for (i, segment) in self.key.iter().enumerate() {
            let parent = self.key[..i].join(".");
            let last = i + 1 == self.key.len();
            let fresh = || {
                if last {
                    Value::Null
                } else {
                    Value::Object(Map::new())
                }
            };
            current = match current {
                Value::Object(map) => {
                    for rival in rival_variants(&parent, segment) {
                        if *rival != segment.as_str() {
                            map.remove(*rival);
                        }
                    }
                    map.entry(segment.clone()).or_insert_with(fresh)
                }
                Value::Array(list) => {
                    let index: usize = segment.parse().map_err(|_| {
                        anyhow!(
                            "--set {self}: `{parent}` is a list: index it with a number (`{parent}.0`)"
                        )
                    })?;
                    if index > list.len() {
                        bail!(
                            "--set {self}: `{parent}` has {} element{}; index {index} is past its end (the index {} appends one)",
                            list.len(),
                            if list.len() == 1 { "" } else { "s" },
                            list.len()
                        );
                    }
                    if index == list.len() {
                        list.push(fresh());
                    }
                    &mut list[index]
                }
                other => bail!(
                    "--set {self}: `{parent}` is {}, not a table or a list",
                    match other {
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                        _ => "empty",
                    }
                ),
            };
        }
        *current = self.value.clone();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
