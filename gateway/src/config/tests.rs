//! Unit tests of the configuration: the bundled files parse and validate, every bad field is reported at once, and
//! the admin and TLS rules hold.

use super::*;

#[test]
fn bundled_config_parses_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = Config::from_file(&root.join("config/gateway.toml")).expect("parses");
    cfg.models.repository = root.join(&cfg.models.repository);
    let r = cfg.validate().expect("valid");
    assert_eq!(r.http_addr.port(), 8000);
    assert_eq!(r.metrics_addr.port(), 8002);
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let mut cfg = Config::default();
    cfg.server.http_addr = "nowhere".into();
    cfg.server.max_body_bytes = 0;
    cfg.models.repository = "/does/not/exist".into();
    cfg.logging.format = "xml".into();
    let errors = cfg.validate().expect_err("invalid");
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].contains("server.http_addr"));
}

#[test]
fn rollout_policies_layer_per_model_and_are_validated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["config/gateway.toml", "config/demo.toml"] {
        let cfg = Config::from_file(&root.join(file)).expect("parses");
        assert!(cfg.rollout.problems(cfg.rollout_features()).is_empty(), "{file}");
    }
    let cfg: Config = toml::from_str(
        "[skew]\nenabled = false\n[rollout.policy]\ninterval_secs = 5\n\
         [rollout.models.a]\nthreshold = 0\nchecks = { max_psi = 0.2 }\n[rollout.models.b]\nintervall = 1\n",
    )
    .expect("parses");
    assert_eq!(cfg.rollout.policy("c").expect("default").interval_secs, 5.0);
    let errors = cfg.rollout.problems(cfg.rollout_features()).join("\n");
    for expected in ["rollout.models.a.threshold", "skew.enabled", "rollout.models.b", "intervall"] {
        assert!(errors.contains(expected), "{expected} missing from:\n{errors}");
    }
}

#[test]
fn unknown_fields_are_refused() {
    let err = toml::from_str::<Config>("[server]\nhttp_adr = '1'\n").expect_err("typo");
    assert!(err.to_string().contains("http_adr"), "{err}");
}

#[test]
fn a_remote_admin_address_needs_tls_or_an_explicit_waiver() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg =
        Config { models: ModelsConfig { repository: root.join("models"), ..Default::default() }, ..Default::default() };
    cfg.admin.addr = "0.0.0.0:8003".into();
    let errors = cfg.validate().expect_err("plain text admin on all interfaces");
    assert!(errors.iter().any(|e| e.contains("admin.tls")), "{errors:?}");
    cfg.admin.allow_plaintext_remote = true;
    cfg.validate().expect("waived");
    cfg.admin.allow_plaintext_remote = false;
    cfg.admin.addr = "[::1]:8003".into();
    cfg.validate().expect("loopback");
    cfg.admin.addr = "0.0.0.0:8003".into();
    cfg.admin.tls = Some(ListenerTls {
        cert: root.join("missing.crt"),
        key: root.join("missing.key"),
        client_ca: None,
        min_version: Default::default(),
        reload_interval_ms: 0,
    });
    let errors = cfg.validate().expect_err("files missing, interval 0");
    assert!(errors.iter().any(|e| e.contains("admin.tls") && e.contains("missing.crt")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("reload_interval_ms")), "{errors:?}");
}
