//! The CPU backend: runs any chunk of any built-in kernel, so every job path works (and is
//! tested) on a machine with no GPU. PTX workloads need the CUDA backend.
//!
//! A chunk's items are split across the backend's threads (scoped threads, no pool); the
//! result does not depend on the thread count or the chunking.

use core::ops::Range;

use sha2::{Digest, Sha256};

use super::kernel::{Builtin, f32s};

/// The CPU backend: how many threads a chunk may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBackend {
    threads: usize,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    /// One thread per available core.
    pub fn new() -> CpuBackend {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuBackend { threads }
    }

    /// A fixed number of threads (at least one): fewer threads draw less power.
    pub fn with_threads(threads: usize) -> CpuBackend {
        CpuBackend {
            threads: threads.max(1),
        }
    }

    /// Threads per chunk.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// A built-in job's state on the CPU: its inputs (sizes already checked) and its output.
pub(crate) struct CpuJob {
    builtin: Builtin,
    threads: usize,
    data: Inputs,
    output: Vec<u8>,
}

/// Inputs in the form the kernel reads them.
enum Inputs {
    Bytes(Vec<u8>),
    Floats { a: Vec<f32>, b: Vec<f32> },
    None,
}

impl CpuJob {
    /// `inputs` must have the sizes `builtin.input_sizes()` gives (the caller checks).
    pub(crate) fn new(backend: &CpuBackend, builtin: Builtin, mut inputs: Vec<Vec<u8>>) -> CpuJob {
        let data = match builtin {
            Builtin::Sha256Batch(_) => Inputs::Bytes(inputs.pop().unwrap_or_default()),
            Builtin::Mandelbrot(_) => Inputs::None,
            Builtin::MatmulF32(_) => Inputs::Floats {
                a: f32s(&inputs[0]),
                b: f32s(&inputs[1]),
            },
        };
        CpuJob {
            output: vec![0; builtin.output_size() as usize],
            builtin,
            threads: backend.threads,
            data,
        }
    }

    /// Computes the output of `items` (one chunk).
    pub(crate) fn run(&mut self, items: Range<u64>) {
        let per = self.builtin.output_bytes_per_item() as usize;
        let (start, end) = (items.start as usize, items.end as usize);
        let out = &mut self.output[start * per..end * per];
        let n = end - start;
        let threads = self.threads.min(n).max(1);
        let (builtin, data) = (&self.builtin, &self.data);
        if threads == 1 {
            run_items(builtin, data, start, out);
            return;
        }
        std::thread::scope(|scope| {
            let mut rest = out;
            let mut first = start;
            for t in 0..threads {
                let count = n * (t + 1) / threads - n * t / threads;
                let (mine, tail) = rest.split_at_mut(count * per);
                rest = tail;
                let at = first;
                scope.spawn(move || run_items(builtin, data, at, mine));
                first += count;
            }
        });
    }

    /// The one output.
    pub(crate) fn finish(self) -> Vec<Vec<u8>> {
        vec![self.output]
    }

    /// The output so far (the chunks run have filled their part of it).
    pub(crate) fn snapshot(&self) -> Vec<Vec<u8>> {
        vec![self.output.clone()]
    }

    /// Puts back an output saved by [`CpuJob::snapshot`]; false when it does not fit.
    pub(crate) fn restore(&mut self, mut outputs: Vec<Vec<u8>>) -> bool {
        match outputs.pop() {
            Some(o) if outputs.is_empty() && o.len() == self.output.len() => {
                self.output = o;
                true
            }
            _ => false,
        }
    }
}

/// Computes the items from `first` on whose output fills `out`.
fn run_items(builtin: &Builtin, data: &Inputs, first: usize, out: &mut [u8]) {
    match (builtin, data) {
        (Builtin::Sha256Batch(s), Inputs::Bytes(input)) => {
            let len = s.item_len() as usize;
            for (i, digest) in out.chunks_exact_mut(32).enumerate() {
                let at = (first + i) * len;
                digest.copy_from_slice(&Sha256::digest(&input[at..at + len]));
            }
        }
        (Builtin::Mandelbrot(t), _) => {
            let width = t.width() as usize;
            for (r, row) in out.chunks_exact_mut(4 * width).enumerate() {
                let y = (first + r) as u32;
                for (col, px) in row.chunks_exact_mut(4).enumerate() {
                    px.copy_from_slice(&t.pixel(col as u32, y).to_le_bytes());
                }
            }
        }
        (Builtin::MatmulF32(mm), Inputs::Floats { a, b }) => {
            let (n, k) = (mm.n() as usize, mm.k() as usize);
            let mut acc = vec![0f32; n];
            for (r, row) in out.chunks_exact_mut(4 * n).enumerate() {
                let i = first + r;
                acc.fill(0.0);
                // i-p-j order: one row of B at a time, contiguous in memory.
                for p in 0..k {
                    let aip = a[i * k + p];
                    let b_row = &b[p * n..(p + 1) * n];
                    for (c, bpj) in acc.iter_mut().zip(b_row) {
                        *c += aip * bpj;
                    }
                }
                for (dst, c) in row.chunks_exact_mut(4).zip(&acc) {
                    dst.copy_from_slice(&c.to_le_bytes());
                }
            }
        }
        // CpuJob::new pairs each kernel with its input form.
        _ => unreachable!("builtin and input form always match"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::kernel::{FIXED_ONE, Mandelbrot, MatmulF32, Sha256Batch};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn run_all(builtin: Builtin, inputs: Vec<Vec<u8>>, threads: usize, chunks: u32) -> Vec<u8> {
        let plan = super::super::kernel::ChunkPlan::new(
            builtin.items(),
            1,
            builtin.items().div_ceil(u64::from(chunks)),
        );
        let mut job = CpuJob::new(&CpuBackend::with_threads(threads), builtin, inputs);
        for i in 0..plan.chunks() {
            job.run(plan.range(i));
        }
        job.finish().remove(0)
    }

    fn sha_one(message: &[u8]) -> String {
        let b = Builtin::Sha256Batch(Sha256Batch::new(1, message.len() as i64).unwrap());
        hex(&run_all(b, vec![message.to_vec()], 1, 1))
    }

    // FIPS 180-2, Appendix B (and the NIST example values for the empty message).
    #[test]
    fn sha256_matches_the_published_test_vectors() {
        assert_eq!(
            sha_one(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha_one(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha_one(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha_one(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn sha256_batch_hashes_each_item_separately_in_order() {
        let b = Builtin::Sha256Batch(Sha256Batch::new(3, 3).unwrap());
        let out = run_all(b, vec![b"abcabcxyz".to_vec()], 2, 2);
        assert_eq!(out.len(), 96);
        assert_eq!(
            hex(&out[..32]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(out[..32], out[32..64]);
        assert_eq!(hex(&out[64..]), hex(&Sha256::digest(b"xyz")));
    }

    fn naive_matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f32;
                for p in 0..k {
                    s += a[i * k + p] * b[p * n + j];
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    fn to_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn matmul_equals_a_naive_reference_for_non_square_shapes() {
        for (m, n, k) in [(1, 1, 1), (3, 5, 2), (7, 2, 9), (16, 33, 17)] {
            // Small integers: every product and sum is exact in f32, so any order agrees.
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 + 3) % 11) as f32 - 5.0)
                .collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 + 1) % 9) as f32 - 4.0).collect();
            let want = naive_matmul(&a, &b, m, n, k);
            let mm = MatmulF32::new(m as i64, n as i64, k as i64).unwrap();
            let got = run_all(
                Builtin::MatmulF32(mm),
                vec![to_bytes(&a), to_bytes(&b)],
                3,
                3,
            );
            assert_eq!(f32s(&got), want, "{m}x{k} · {k}x{n}");
        }
    }

    #[test]
    fn matmul_of_a_known_product() {
        // [1 2 3; 4 5 6] · [7 8; 9 10; 11 12] = [58 64; 139 154]
        let mm = MatmulF32::new(2, 2, 3).unwrap();
        let a = to_bytes(&[1., 2., 3., 4., 5., 6.]);
        let b = to_bytes(&[7., 8., 9., 10., 11., 12.]);
        let got = run_all(Builtin::MatmulF32(mm), vec![a, b], 1, 1);
        assert_eq!(f32s(&got), vec![58., 64., 139., 154.]);
    }

    #[test]
    fn mandelbrot_pixels_land_where_the_parameters_say() {
        // Columns at x = -2, -1, 0, 1, 2 on the real axis, then the row y = 1 above.
        let t = Mandelbrot::new(5, 2, -2 * FIXED_ONE, 0, FIXED_ONE, 100).unwrap();
        let out = run_all(Builtin::Mandelbrot(t), vec![], 1, 1);
        let counts: Vec<u32> = out
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Row 0: -2, -1, 0 are in the set; 1 escapes at 3 (z: 0, 1, 2, 5); 2 at 2 (z: 0, 2, 6).
        // Row 1: -2+i and 2+i at 1 (|z1|² = 5); -1+i at 3 (z: -1+i, -1-i, -1+3i);
        // i stays bounded (z: i, -1+i, -i, -1+i, ...); 1+i at 2 (z: 1+i, 1+3i).
        assert_eq!(&counts[..5], &[100, 100, 100, 3, 2]);
        assert_eq!(&counts[5..], &[1, 3, 100, 2, 1]);
    }

    #[test]
    fn chunked_and_threaded_output_equals_the_single_pass_output() {
        let t = Mandelbrot::new(37, 23, -2 * FIXED_ONE, -FIXED_ONE, FIXED_ONE / 12, 200).unwrap();
        let whole = run_all(Builtin::Mandelbrot(t), vec![], 1, 1);
        for (threads, chunks) in [(1, 23), (4, 5), (3, 7)] {
            assert_eq!(
                run_all(Builtin::Mandelbrot(t), vec![], threads, chunks),
                whole
            );
        }
        let s = Sha256Batch::new(50, 17).unwrap();
        let input: Vec<u8> = (0..850u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = run_all(Builtin::Sha256Batch(s), vec![input.clone()], 1, 1);
        assert_eq!(run_all(Builtin::Sha256Batch(s), vec![input], 4, 9), whole);
    }
}
