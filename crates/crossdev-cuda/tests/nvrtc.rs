//! Every kernel compiles to PTX for the architectures of the GPU machines (sm_80, sm_90), with
//! NVRTC from the `nvidia-cuda-nvrtc` wheel: no GPU needed, so this runs in CI.

use crossdev_cuda::kernels::{compile, entry_points};

#[test]
fn every_kernel_compiles_to_ptx_for_sm80_and_sm90() {
    for arch in ["compute_80", "compute_90"] {
        let modules = compile(arch).unwrap_or_else(|e| panic!("{e}"));
        let ptx: String = modules.iter().map(|(_, p)| p.to_src()).collect();
        for name in entry_points() {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX for {arch}");
        }
        let target = format!(".target sm_{}", &arch["compute_".len()..]);
        assert!(ptx.contains(&target), "PTX for {arch} lacks `{target}`");
    }
}
