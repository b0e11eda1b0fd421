//! `rcl-fs`: mount program with fuse-overlayfs's command line.
fn main() {
    todo!("mount program")
}
