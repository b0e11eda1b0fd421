mod core_util;
use core_util::*;
#[test]
fn pjd_server() {
    let Ok(base) = std::env::var("PJD_BASE") else {
        return;
    };
    let base = std::path::PathBuf::from(base);
    let mut m = Mounted::layers(1);
    std::fs::create_dir_all(m.lower(0).join("t")).unwrap();
    let mut cfg = m.config();
    cfg.allow_other = true;
    if std::env::var("PT_OFF").is_ok() {
        cfg.passthrough = fsimpl::Passthrough::Off;
    }
    m.mount(cfg);
    std::fs::write(base.join("mnt"), m.mnt.to_str().unwrap()).unwrap();
    let start = std::time::Instant::now();
    while !base.join("stop").exists() && start.elapsed().as_secs() < 900 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
