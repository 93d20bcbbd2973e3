//! Fuzzes the model manifest parser and checker (`models/<name>/<version>/manifest.json`, written by hand or by
//! a training job): any bytes must give a checked manifest or an `Err` listing the problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway::manifest::Manifest::parse(data, "m", "1");
});
