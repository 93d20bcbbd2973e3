//! Fuzzes the state file parser (`routing.json`: routing, rollouts and event journals, untrusted after a crash or
//! a hand edit): any bytes must give a state or an `Err` (the file is then moved aside), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway::state::parse(data);
});
