#[test]
fn serve() {
    let Ok(spec) = std::env::var("SERVE") else {
        return;
    };
    let p: Vec<&str> = spec.split('|').collect();
    let mut cfg =
        fsimpl::OverlayConfig::new(vec![p[0].into()]).with_upper(p[1].into(), p[2].into());
    cfg.allow_other = true;
    if std::env::var("PT_OFF").is_ok() {
        cfg.passthrough = fsimpl::Passthrough::Off;
    }
    let fs = fsimpl::UnionFs::new(cfg).unwrap();
    fsimpl::mount(fs, std::path::Path::new(p[3]))
        .unwrap()
        .run()
        .unwrap();
}
