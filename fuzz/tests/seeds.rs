//! The committed seed corpus still means what its names say: every `ok-*` seed decodes with the gateway's real
//! decoders and every `bad-*` seed is rejected, so a wire format change cannot quietly turn the fuzzers' starting
//! points into noise. Runs without cargo-fuzz: `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::Path;

use prost::Message;

fn check<E: std::fmt::Debug>(target: &str, decode: impl Fn(&[u8]) -> Result<(), E>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let (mut seen, mut wrong) = (0, Vec::new());
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name").to_owned();
        let bytes = std::fs::read(&path).expect("readable seed");
        let want = if name.starts_with("ok-") {
            true
        } else if name.starts_with("bad-") {
            false
        } else {
            panic!("{target}/{name}: seeds are named ok-* or bad-*");
        };
        match decode(&bytes) {
            Ok(()) if !want => wrong.push(format!("{target}/{name} decodes")),
            Err(e) if want => wrong.push(format!("{target}/{name} is rejected: {e:?}")),
            _ => {}
        }
        seen += 1;
    }
    assert!(wrong.is_empty(), "seeds that do not do what their names say:\n{}", wrong.join("\n"));
    assert!(seen >= 4, "{target}: only {seen} seeds");
}

#[test]
fn json_request() {
    check("json_request", |b| gateway::protocol::json::decode_request(b).map(drop));
}

#[test]
fn binary_request() {
    check("binary_request", |b| {
        let (len, body) = b.split_first_chunk::<4>().ok_or("shorter than the length prefix")?;
        gateway::protocol::json::decode_request_parts(body, Some(u32::from_le_bytes(*len) as usize))
            .map(drop)
            .map_err(|e| e.to_string().leak() as &str)
    });
}

#[test]
fn json_response() {
    check("json_response", |b| gateway::protocol::json::decode_response(b).map(drop));
}

#[test]
fn grpc_request() {
    check("grpc_request", |b| {
        let r = gateway::protocol::pb::ModelInferRequest::decode(b).map_err(|e| e.to_string())?;
        gateway::protocol::grpc::decode_inputs(r.inputs, r.raw_input_contents).map(drop).map_err(|e| e.to_string())
    });
}

#[test]
fn manifest() {
    check("manifest", |b| gateway::manifest::Manifest::parse(b, "m", "1").map(drop));
}

#[test]
fn state_file() {
    check("state_file", |b| gateway::state::parse(b).map(drop));
}

#[test]
fn admin_body() {
    const ROUTES: [&str; 6] = ["canary", "weight", "shadow", "stable", "rollout", "note"];
    check("admin_body", |b| {
        let (&pick, body) = b.split_first().ok_or("empty seed")?;
        gateway::api::admin::check_body(ROUTES[usize::from(pick) % ROUTES.len()], body).map_err(|e| e.to_string())
    });
}
