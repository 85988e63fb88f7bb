//! The inheriting strategy of FGD, PGD and MMRazor's MGD (`init_student=True`): the
//! teacher's neck and head weights copied into the student before training
//! (`../shared/methods/kd-detection.md` §13.3).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use kdet_models::{Model, ModelFamily};

use crate::error::DistillError;

/// Copies the teacher's head (every parameter: the shapes must agree) and the neck
/// parameters whose shapes agree into `student`. Returns the student and the neck
/// parameters left at their initial values, as `neck.<path> (student [..], teacher [..])`.
///
/// Dense detectors only (the neck and head are an FPN and a dense head): another family
/// is an error naming it.
pub fn inherit_neck_and_head(
    student: Model,
    teacher: &Model,
) -> Result<(Model, Vec<String>), DistillError> {
    let (Model::Dense(mut student), Some(teacher)) = (student.clone(), teacher.dense()) else {
        return Err(DistillError::Recipe(format!(
            "distill.inherit copies a dense detector's FPN and head; the student is {} and the teacher {}: set inherit = false",
            ModelFamily::family(&student),
            ModelFamily::family(teacher)
        )));
    };
    let (head, skipped) = inherit_matching(student.head, &teacher.head, "head")?;
    if !skipped.is_empty() {
        return Err(DistillError::Recipe(format!(
            "distill.inherit: the student's head must have the teacher's shapes; these differ: {}",
            skipped.join(", ")
        )));
    }
    student.head = head;
    // The FPN's lateral convs read the backbone, whose widths differ between a teacher and
    // its student: they keep their initial values (reported); the output convs and the
    // extra levels are copied.
    let (neck, skipped) = inherit_matching(student.neck, &teacher.neck, "neck")?;
    student.neck = neck;
    Ok((Model::Dense(student), skipped))
}

/// Every float parameter of a module in visiting order: path, shape, value.
fn float_params<M: Module>(module: &M) -> Vec<(String, Vec<usize>, TensorData)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, TensorData)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            self.out.push((
                self.path.join("."),
                value.shape().as_slice().to_vec(),
                value.into_data(),
            ));
        }
    }
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// FGD/PGD's inheriting strategy for one module: every parameter of `into` takes the value
/// of the parameter at the same position of `from` when their shapes agree (keeping its own
/// id, device and trainability). Returns the module and the paths left at their initial
/// values. Both modules must have the same structure (the same parameter count).
pub(crate) fn inherit_matching<M: Module>(
    into: M,
    from: &M,
    prefix: &str,
) -> Result<(M, Vec<String>), DistillError> {
    struct Copy {
        from: std::vec::IntoIter<(String, Vec<usize>, TensorData)>,
        skipped: Vec<String>,
        prefix: String,
    }
    impl ModuleMapper for Copy {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (path, shape, data) = self
                .from
                .next()
                .expect("the parameter counts were checked to agree");
            let own = param.shape().as_slice().to_vec();
            if own != shape {
                self.skipped.push(format!(
                    "{}.{path} (student {own:?}, teacher {shape:?})",
                    self.prefix
                ));
                return param;
            }
            param.map(|t| {
                let require_grad = t.is_require_grad();
                Tensor::from_data(data, &t.device()).set_require_grad(require_grad)
            })
        }
    }
    let params = float_params(from);
    let own = float_params(&into).len();
    if own != params.len() {
        return Err(DistillError::Recipe(format!(
            "distill.inherit: the student's {prefix} has {own} parameters and the teacher's {}: inheriting needs the same {prefix} architecture",
            params.len()
        )));
    }
    let mut copy = Copy {
        from: params.into_iter(),
        skipped: Vec::new(),
        prefix: prefix.to_string(),
    };
    let module = into.map(&mut copy);
    Ok((module, copy.skipped))
}
