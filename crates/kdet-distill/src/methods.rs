//! The method list: every KD method of the zoo, once. The recipe's loss enum
//! ([`KdLossConfig`]), its parser, `KdLossConfig::METHODS` (also printed by `kdet config
//! methods` for the scripts), the modules enum ([`KdModules`]) and the dispatch are
//! generated from these lines ([`crate::kd_methods!`]); each method lives in its own file
//! under `losses/` and implements [`crate::method::KdMethod`].

use crate::losses::{
    cwd, fbkd, fgd, fitnet, frs, icd, kd, ld, lgd, mgd, mqkd, pgd, pkd, rm_pfi, tbd,
};

crate::kd_methods! {
    /// Hinton logit KD on every prior's class logits (MMRazor `KLDivergence`).
    LogitKd(kd::LogitKdConfig),
    /// FitNets feature imitation (MMRazor `L2Loss`).
    Fitnet(fitnet::FitnetConfig),
    /// Channel-wise distillation (MMRazor `ChannelWiseDivergence`).
    Cwd(cwd::CwdConfig),
    /// Pearson-correlation feature imitation (MMRazor `PKDLoss`).
    Pkd(pkd::PkdConfig),
    /// Focal and global distillation (yzd-v/FGD).
    Fgd(fgd::FgdConfig),
    /// Localization distillation with VLR and class KD (HikariTJU/LD); GFL heads only.
    Ld(ld::LdConfig),
    /// Feature-richness score distillation (duzhixing/FRS).
    Frs(frs::FrsConfig),
    /// Prediction-guided distillation on the head towers (ChenhongyiYang/PGD).
    Pgd(pgd::PgdConfig),
    /// Masked generative distillation (yzd-v/MGD; MMRazor `MGDConnector` + `MGDLoss`).
    Mgd(mgd::MgdConfig),
    /// Feature-based KD with attention and non-local modules (MMRazor `FBKDLoss`).
    Fbkd(fbkd::FbkdConfig),
    /// Rank mimicking and prediction-guided feature imitation (MMRazor PR #107; no
    /// official code).
    RmPfi(rm_pfi::RmPfiConfig),
    /// Task-balanced distillation: harmony distillation and task-decoupled feature masks
    /// (kdet's reconstruction from the abstract; no code or formulas are public).
    Tbd(tbd::TbdConfig),
    /// Instance-conditional distillation (megvii-research/ICD): values of the student's
    /// features imitated where the teacher's instance-conditioned attention looks.
    Icd(icd::IcdConfig),
    /// Label-guided self-distillation (megvii-research/LGD): a teacher-free method whose
    /// dynamic teacher is built from the labels and the student's own features.
    Lgd(lgd::LgdConfig),
    /// Matched-query KD between query models (DETR-lite, Mask2Former-lite): class, mask
    /// and box KD on Hungarian-matched student/teacher queries (kdet's reconstruction).
    MatchedQueryKd(mqkd::MatchedQueryKdConfig),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::KdMethod;

    #[test]
    fn method_names_are_unique_and_listed_in_order() {
        let names = KdLossConfig::METHODS;
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicate method names: {names:?}"
        );
        assert_eq!(names[0], kd::LogitKdConfig::NAME);
        assert_eq!(names[names.len() - 1], mqkd::MatchedQueryKdConfig::NAME);
    }

    /// Every method parses from `{ type = name }` with its defaults, writes `type` first
    /// and reads back to the same config.
    #[test]
    fn every_method_round_trips_with_type_first() {
        for &name in KdLossConfig::METHODS {
            let parsed: KdLossConfig = toml::from_str(&format!("type = \"{name}\""))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.method(), name);
            let json = serde_json::to_string(&parsed).expect("serialises");
            assert!(
                json.starts_with(&format!("{{\"type\":\"{name}\"")),
                "{name}: `type` first, got {json}"
            );
            let back: KdLossConfig = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, parsed, "{name}");
        }
    }

    #[test]
    fn unknown_method_and_unknown_setting_are_errors_naming_them() {
        let err = serde_json::from_str::<KdLossConfig>(r#"{"type": "nope"}"#)
            .expect_err("unknown method");
        assert!(
            err.to_string().contains("unknown loss type `nope`"),
            "{err}"
        );
        assert!(err.to_string().contains("logit_kd, fitnet"), "{err}");
        let err = serde_json::from_str::<KdLossConfig>(r#"{"type": "pkd", "tau": 2.0}"#)
            .expect_err("unknown setting");
        assert!(
            err.to_string()
                .contains("`tau` is not a setting of the pkd loss"),
            "{err}"
        );
        let err = serde_json::from_str::<KdLossConfig>(r#"{"weight": 2.0}"#).expect_err("no type");
        assert!(err.to_string().contains("needs `type"), "{err}");
    }
}
