mod toolchain;
fn main() {}
