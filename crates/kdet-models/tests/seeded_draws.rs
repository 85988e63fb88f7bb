//! Mask2Former's point draws repeat after `device.seed(s)`. A test binary of its own: the
//! seed belongs to the device, which every thread of a test binary shares, so a test that
//! draws between the seed and the draw (any test running in parallel) would break it.

use burn::tensor::{Device, Distribution, Tensor};
use kdet_models::ops::sample::{
    PointDraws, UncertainPointsConfig, uncertain_point_coords_with_randomness,
};

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

#[test]
fn device_draws_repeat_with_the_seed() {
    let device = Device::flex();
    let logits = Tensor::<4>::random([2, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let config = UncertainPointsConfig::new().with_num_points(10);
    let draw = |logits: Tensor<4>| {
        vals(uncertain_point_coords_with_randomness(
            logits,
            &config,
            &mut PointDraws::Device,
        ))
    };
    device.seed(7);
    let a = draw(logits.clone());
    device.seed(7);
    let b = draw(logits.clone());
    assert_eq!(a, b);
    assert_eq!(a.len(), 2 * 10 * 2);
    // Training: tracked logits, the autodiff device seeded the same.
    let autodiff = Device::flex().autodiff();
    autodiff.seed(7);
    let c = draw(logits.autodiff().require_grad());
    assert_eq!(a, c);
}
