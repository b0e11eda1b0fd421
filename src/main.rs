//! The `rcl` command line.
fn main() {
    todo!("cli")
}
