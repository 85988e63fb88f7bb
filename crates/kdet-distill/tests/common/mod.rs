//! Helpers shared by the distiller test binaries (`distiller.rs`, `query_distiller.rs`).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use kdet_distill::recipe::RecipeConfig;

pub fn recipe(text: &str) -> RecipeConfig {
    toml::from_str(text).expect("the test recipe parses")
}

/// CRC-32 of every float parameter's bytes, and how many parameters there are.
pub fn crc<M: Module>(m: &M) -> (u32, usize) {
    struct Crc(crc32fast::Hasher, usize);
    impl ModuleVisitor for Crc {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.update(param.val().into_data().as_bytes());
            self.1 += 1;
        }
    }
    let mut c = Crc(crc32fast::Hasher::new(), 0);
    m.visit(&mut c);
    (c.0.finalize(), c.1)
}

/// Every name in `names` is among the logged loss names.
pub fn assert_logged(logged: &[String], names: &[&str]) {
    for name in names {
        assert!(
            logged.iter().any(|n| n == name),
            "{name} not logged: {logged:?}"
        );
    }
}
