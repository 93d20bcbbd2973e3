//! CPU time spent by processes in the measured phase: the load tester's own and, when asked (`--server-pid`), the
//! server's on the same machine, as CPU per request. On a shared machine CPU per request is steadier than
//! throughput, and the load tester's share shows how much of the machine a run left to the server: with 10,000
//! connections the generator's own cost per request grows more than a server's.

/// Ticks per second of the times in `/proc/<pid>/stat` (USER_HZ: 100 on Linux whatever the kernel's tick rate).
const USER_HZ: f64 = 100.0;

/// CPU time in seconds, split into the process's own code (user) and the kernel's work for it (system): at many
/// connections the two grow differently.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    fn minus(self, before: Cpu) -> Cpu {
        Cpu { user: self.user - before.user, system: self.system - before.system }
    }
}

/// CPU time of process `pid` so far; `None` where there is no `/proc` or no such process.
pub fn process_cpu(pid: u32) -> Option<Cpu> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) state ppid ... utime stime ...`: utime and stime are fields 14 and 15. The command name may hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse(stat: &str) -> Option<Cpu> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Cpu { user: utime as f64 / USER_HZ, system: stime as f64 / USER_HZ })
}

/// CPU time of each watched process over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// The load tester itself.
    pub load_tester: Option<Cpu>,
    /// The server named by `--server-pid`.
    pub server: Option<Cpu>,
}

/// The counters at the start of a window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    load_tester: Option<Cpu>,
    server: Option<(u32, Cpu)>,
}

impl Window {
    pub fn start(server_pid: Option<u32>) -> Self {
        Self {
            load_tester: process_cpu(std::process::id()),
            server: server_pid.and_then(|p| Some((p, process_cpu(p)?))),
        }
    }

    pub fn end(self) -> Spent {
        let since = |pid: u32, before: Cpu| process_cpu(pid).map(|now| now.minus(before));
        Spent {
            load_tester: self.load_tester.and_then(|b| since(std::process::id(), b)),
            server: self.server.and_then(|(p, b)| since(p, b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_the_command_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 0 0\n";
        assert_eq!(parse(stat), Some(Cpu { user: 2.5, system: 0.75 }));
        assert_eq!(parse("4242 (x) S 1 2"), None, "too short");
        assert_eq!(parse("no parenthesis"), None);
    }

    #[test]
    fn this_process_reads_and_a_missing_one_reads_none() {
        let spent = Window::start(Some(u32::MAX)).end();
        assert!(spent.load_tester.is_some_and(|s| s.user >= 0.0 && s.system >= 0.0), "{spent:?}");
        assert_eq!(spent.server, None, "no process has pid u32::MAX");
    }
}
