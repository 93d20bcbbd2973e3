//! Fuzzes the admin API's request bodies as each route decodes and checks them: the first byte picks the route
//! (canary, weight, shadow, stable, rollout, or a note for promote/rollback/rollout commands), the rest is the
//! body. Any body must be accepted or come back as `Err` (a 400), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const ROUTES: [&str; 6] = ["canary", "weight", "shadow", "stable", "rollout", "note"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let _ = gateway::api::admin::check_body(ROUTES[usize::from(pick) % ROUTES.len()], body);
});
