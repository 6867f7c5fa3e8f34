// With the `cuda` feature, nvcc compiles the kernel to PTX, which the binary embeds: the build
// needs the CUDA toolkit (the cuda image), running `--describe` needs no GPU.
fn main() {
    println!("cargo:rerun-if-changed=echo.cu");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("echo.ptx");
    let status = std::process::Command::new("nvcc")
        .args(["--ptx", "echo.cu", "-o"])
        .arg(&out)
        .status()
        .expect("the cuda feature needs nvcc (the CUDA toolkit) on PATH");
    assert!(status.success(), "nvcc failed to compile echo.cu");
}
