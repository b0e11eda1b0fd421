//! Every shipped example spec in specs/ passes validation on this machine.

use std::path::Path;

#[test]
fn every_example_spec_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 4,
        "expected example specs in {}",
        dir.display()
    );
    let mut missing_busybox = false;
    for path in &names {
        let text = std::fs::read_to_string(path).unwrap();
        if text.contains("[containers.") {
            match rcl::spec::load_project(path) {
                Ok(p) => assert!(p.containers.len() > 1),
                Err(e) => panic!("{} does not load:\n{e}", path.display()),
            }
            continue;
        }
        if let Err(e) = rcl::spec::load_project(path) {
            if !e.message.contains("/bin/busybox") {
                panic!("{} does not load as a project:\n{e}", path.display());
            }
        }
        match rcl::spec::load(path) {
            Ok(spec) => {
                assert!(!spec.process.args.is_empty());
                assert!(!spec.rootfs.layers.is_empty());
            }
            Err(e) if e.message.contains("/bin/busybox") && !Path::new("/bin/busybox").exists() => {
                missing_busybox = true;
            }
            Err(e) => panic!("{} does not load:\n{e}", path.display()),
        }
    }
    if missing_busybox {
        testkit::skip!("busybox.toml needs /bin/busybox (apt-get install busybox-static)");
    }
}

#[test]
fn hello_example_has_the_expected_shape() {
    let spec =
        rcl::spec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/hello.toml")).unwrap();
    assert_eq!(spec.name, "hello");
    assert_eq!(
        spec.process.args[..2],
        ["/bin/sh".to_string(), "-c".to_string()]
    );
    let rcl::spec::Layer::Host(progs) = &spec.rootfs.layers[0] else {
        panic!("hello.toml should use a host layer");
    };
    assert!(progs.iter().any(|p| p == Path::new("/bin/sh")));
}
