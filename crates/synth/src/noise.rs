//! Seeded noise fields shared by the modality generators.

use rand::{RngCore, rngs::StdRng};

/// An approximately standard-normal sample: Irwin–Hall sum of four 16-bit uniforms from one
/// 64-bit draw, rescaled to unit variance. Cheap, bounded (|x| < 3.5) and good enough for images.
pub(crate) fn gaussian(rng: &mut StdRng) -> f32 {
    let v = rng.next_u64();
    let sum: u32 = (0..4).map(|i| ((v >> (16 * i)) & 0xFFFF) as u32).sum();
    // Mean of the sum is 2 * 65535, variance 4 / 12 of 65535^2.
    (sum as f32 / 65535.0 - 2.0) * 3.0_f32.sqrt()
}

/// Spatially correlated Gaussian noise with standard deviation `sigma`: white noise smoothed by
/// a separable [1 2 1]/4 kernel, which mimics the few-pixel correlation of reconstructed CT
/// noise. The kernel lowers the variance by (6/16)^2, so the white noise is scaled up to match.
pub(crate) fn correlated(rng: &mut StdRng, rows: usize, cols: usize, sigma: f32) -> Vec<f32> {
    let white_sigma = sigma / 0.375;
    let white: Vec<f32> = (0..rows * cols)
        .map(|_| gaussian(rng) * white_sigma)
        .collect();
    let mut tmp = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &white[r * cols..(r + 1) * cols];
        for c in 0..cols {
            let l = row[c.saturating_sub(1)];
            let rr = row[(c + 1).min(cols - 1)];
            tmp[r * cols + c] = 0.25 * l + 0.5 * row[c] + 0.25 * rr;
        }
    }
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let up = r.saturating_sub(1) * cols;
        let down = (r + 1).min(rows - 1) * cols;
        for c in 0..cols {
            out[r * cols + c] = 0.25 * tmp[up + c] + 0.5 * tmp[r * cols + c] + 0.25 * tmp[down + c];
        }
    }
    out
}

/// Smooth value noise in [-1, 1]: uniform values on a lattice of `cell`-pixel squares,
/// interpolated with a smoothstep so that the field has no visible grid.
pub(crate) fn smooth(rng: &mut StdRng, rows: usize, cols: usize, cell: usize) -> Vec<f32> {
    let gw = cols / cell + 2;
    let gh = rows / cell + 2;
    let lattice: Vec<f32> = (0..gw * gh)
        .map(|_| (rng.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0)
        .collect();
    let s = |t: f32| t * t * (3.0 - 2.0 * t);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let gy = r / cell;
        let ty = s((r % cell) as f32 / cell as f32);
        for c in 0..cols {
            let gx = c / cell;
            let tx = s((c % cell) as f32 / cell as f32);
            let at = |x: usize, y: usize| lattice[y * gw + x];
            let top = at(gx, gy) + (at(gx + 1, gy) - at(gx, gy)) * tx;
            let bottom = at(gx, gy + 1) + (at(gx + 1, gy + 1) - at(gx, gy + 1)) * tx;
            out.push(top + (bottom - top) * ty);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn stats(v: &[f32]) -> (f32, f32) {
        let n = v.len() as f32;
        let mean = v.iter().sum::<f32>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn correlated_noise_has_requested_sigma() {
        let mut rng = StdRng::seed_from_u64(1);
        let (mean, sd) = stats(&correlated(&mut rng, 200, 200, 4.0));
        assert!(mean.abs() < 0.2, "{mean}");
        assert!((sd - 4.0).abs() < 0.3, "{sd}");
    }

    #[test]
    fn smooth_noise_is_bounded_and_smooth() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = smooth(&mut rng, 100, 100, 32);
        assert!(n.iter().all(|v| (-1.0..=1.0).contains(v)));
        let max_step = n
            .windows(2)
            .enumerate()
            .filter(|(i, _)| (i + 1) % 100 != 0)
            .map(|(_, w)| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        assert!(max_step < 0.15, "{max_step}");
    }
}
