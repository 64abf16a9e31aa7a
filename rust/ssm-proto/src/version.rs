//! Version strings and the thresholds the agent and client choose modes by (§5.5).

use std::cmp::Ordering;

/// The version this client reports in the open frame and `HandshakeResponse` (§2.2, §5.3).
///
/// Agents pick port modes by it (§5.5): at least 1.1.70 selects smux, above 1.2.331.0 turns smux
/// keepalive off. We implement both, so we report a version of the current plugin generation.
pub const CLIENT_VERSION: &str = "1.2.650.0";

/// Compares dotted versions numerically, missing components counting as 0 and non-numeric
/// components as 0 (fixes §9 item 23: the plugin cannot compare `3.3.40` with `3.0.196.0`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let parse = |s: &str| -> Vec<u64> {
        s.trim()
            .split('.')
            .map(|p| p.trim().parse::<u64>().unwrap_or(0))
            .collect()
    };
    let (a, b) = (parse(a), parse(b));
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

/// Agent versions above this send the TerminateSession flag in basic mode (§5.5).
pub const AGENT_TERMINATE_FLAG_AFTER: &str = "2.3.722.0";
/// Agent versions above this use smux for `LocalPortForwarding` (§5.5, §7.1).
pub const AGENT_MUX_AFTER: &str = "3.0.196.0";
/// Agent versions above this run smux without keepalive (§5.5, §7.4).
pub const AGENT_NO_KEEPALIVE_AFTER: &str = "3.1.1511.0";
/// The one agent release up to [`AGENT_NO_KEEPALIVE_AFTER`] whose smux server has keepalive off
/// for every client: agent/session/plugins/port/port_mux.go at tag 3.1.1446.0 sets
/// `KeepAliveDisabled = true` unconditionally; 3.1.1476.0 and 3.1.1511.0 went back to
/// `smux.Server(conn, nil)` (keepalive on), and 3.1.1575.0 made it depend on the client version.
pub const AGENT_KEEPALIVE_OFF_RELEASE: &str = "3.1.1446.0";
/// Client versions at or above this get smux from the agent (§5.5).
pub const CLIENT_MUX_FROM: &str = "1.1.70";
/// Client versions above this get smux without keepalive from the agent (§5.5).
pub const CLIENT_NO_KEEPALIVE_AFTER: &str = "1.2.331.0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_numerically_with_missing_parts_as_zero() {
        assert_eq!(compare("3.3.40", "3.0.196.0"), Ordering::Greater);
        assert_eq!(compare("3.0.196.0", "3.0.196"), Ordering::Equal);
        assert_eq!(compare("1.2.650.0", "1.2.331.0"), Ordering::Greater);
        assert_eq!(compare("1.1.69", "1.1.70"), Ordering::Less);
        assert_eq!(compare("2.3.722.0", "2.3.722.0"), Ordering::Equal);
        assert_eq!(compare("10.0", "9.9.9.9"), Ordering::Greater);
    }
}
