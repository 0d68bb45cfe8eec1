//! The parser against the reference (`docs/config.md`) and its error messages.

use super::*;
use crate::replication::{Mode, OnInsufficient};

const BASE: &str = r#"
node_id = 1
data_dir = "d"
listen = "127.0.0.1:7001"
shards = 2
[[nodes]]
id = 1
addr = "127.0.0.1:7001"
[[nodes]]
id = 2
addr = "127.0.0.1:7002"
[[nodes]]
id = 3
addr = "127.0.0.1:7003"
"#;

fn parse(streams: &str) -> Result<Config, String> {
    Config::parse(&format!("{BASE}{streams}"), Path::new("/base"))
}

#[test]
fn defaults() {
    let c = parse("[[streams]]\nname = \"orders\"\nprimary = 1\n").unwrap();
    assert_eq!(c.data_dir, Path::new("/base/d"));
    let s = &c.streams[0];
    assert_eq!(s.sync_set, vec![2, 3]);
    assert_eq!(s.settings.mode, Mode::Strong);
    assert_eq!(s.settings.k(2), 2);
    assert_eq!(s.settings.on_insufficient, OnInsufficient::Block);
}

#[test]
fn a_front_is_checked_for_what_would_lose_data() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\nignored\n").unwrap();
    let chmod = |mode| {
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    chmod(0o600);
    let front = |extra: &str, keys: &str| {
        let text = format!(
            "{BASE}[[streams]]\nname = \"db\"\nprimary = 1\n{extra}\
             front = {{ kind = \"mariadb\", primary = \"127.0.0.1:3306\", \
             user = \"lockstep\", password_file = \"pw\"{keys} }}\n"
        );
        Config::parse(&text, dir.path())
    };
    let c = front("", ", heartbeat_ms = 250").unwrap();
    let f = c.streams[0].front.as_ref().unwrap();
    assert_eq!(f.password.as_deref(), Some(&b"secret"[..]));
    assert_eq!(f.heartbeat, std::time::Duration::from_millis(250));
    assert_eq!(f.server_id, crate::front::SERVER_ID_BASE_DEFAULT + 1);
    // (stream keys, front keys, words of the error)
    let cases = [
        ("mode = \"semi\"\n", "", "needs mode = \"strong\""),
        ("mode = \"async\"\n", "", "needs mode = \"strong\""),
        ("on_insufficient = \"degrade\"\n", "", "needs \"block\""),
        ("", ", server_id = 4294967295", "exceeds"),
        ("", ", heartbeat_ms = 0", "heartbeat_ms must be positive"),
        ("", ", event_bytes_max = 10", "event_bytes_max"),
        ("", ", colour = 1", "unknown field"),
    ];
    for (extra, keys, words) in cases {
        let err = front(extra, keys).unwrap_err();
        assert!(err.contains(words), "{extra}{keys}: {err}");
    }
    let err = Config::parse(
        &format!(
            "{BASE}[[streams]]\nname = \"db\"\nprimary = 1\nfront = {{ kind = \"postgres\", \
             primary = \"x:1\", user = \"u\" }}\n"
        ),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.contains("the only kind is"), "{err}");
    chmod(0o644);
    let err = front("", "").unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    chmod(0o600);
    // A node whose log batch cannot hold the front's largest record.
    std::fs::write(
        dir.path().join("small.toml"),
        "[log]\nbatch_bytes = 65536\n",
    )
    .unwrap();
    let err = Config::parse(
        &format!(
            "profile = \"small.toml\"\n{BASE}[[streams]]\nname = \"db\"\nprimary = 1\n\
             front = {{ kind = \"mariadb\", primary = \"127.0.0.1:3306\", user = \"u\" }}\n"
        ),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.contains("batch_bytes = 65536"), "{err}");
}

#[test]
fn errors_name_the_problem() {
    let cases = [
        (
            "[[streams]]\nname = \"a\"\nprimary = 9\n",
            "primary 9 is not a configured node",
        ),
        ("[[streams]]\nname = \"a/b\"\nprimary = 1\n", "names are"),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\nmode = \"sync\"\n",
            "unknown commit mode",
        ),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\nsync_acks = 3\n",
            "sync_acks = 3",
        ),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\nsync_set = [1]\n",
            "cannot be its own",
        ),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\n[[streams]]\nname = \"a\"\nprimary = 2\n",
            "defined twice",
        ),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\nsync_set = [2]\nlearners = [2]\n",
            "listed twice",
        ),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\ncolour = 1\n",
            "colour",
        ),
        (
            "[[streams]]\nname = \"a\"\nprimary = 1\nsync_set = []\nlearners = [2, 3]\n",
            "needs at least one sync-set member",
        ),
    ];
    for (text, want) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    let e = Config::parse(&BASE.replace("node_id = 1", "node_id = 7"), Path::new("/")).unwrap_err();
    assert!(e.contains("node_id = 7"), "{e}");
}

#[test]
fn a_joining_node_needs_the_secret_and_nothing_of_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let private = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    private("secret", "0123456789abcdef0123\n");
    let joiner = "node_id = 4\ndata_dir = \"d\"\nlisten = \"127.0.0.1:7004\"\n\
                  join = [\"127.0.0.1:7001\"]\n";
    let c = Config::parse(&format!("{joiner}secret_file = \"secret\"\n"), dir.path()).unwrap();
    assert_eq!(c.join, vec!["127.0.0.1:7001".to_string()]);
    assert_eq!(c.advertise, "127.0.0.1:7004");
    assert!(c.secret.is_some() && c.nodes.is_empty() && c.streams.is_empty());
    assert_eq!(c.control.as_ref().unwrap().failover_timeout_ms, 150);
    let cases = [
        (joiner.to_string(), "only with the cluster's secret_file"),
        (
            format!("{joiner}secret_file = \"secret\"\n[[nodes]]\nid = 4\naddr = \"x:1\"\n"),
            "remove [[nodes]]",
        ),
        (
            format!("{joiner}secret_file = \"secret\"\n[control]\nvoters = [4]\n"),
            "not a voter",
        ),
        (
            format!("{joiner}secret_file = \"missing\"\n"),
            "secret_file",
        ),
    ];
    for (text, want) in cases {
        let e = Config::parse(&text, dir.path()).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    private("short", "tiny");
    let e = Config::parse(&format!("{BASE}secret_file = \"short\"\n"), dir.path());
    // `secret_file` after [[nodes]] belongs to the last node table: refused there.
    assert!(e.is_err());
    let e = Config::parse(&format!("secret_file = \"short\"\n{BASE}"), dir.path()).unwrap_err();
    assert!(e.contains("at least 16"), "{e}");
}

/// The keys of each section of `docs/config.md` (rows that start with a key).
fn documented() -> std::collections::BTreeMap<&'static str, Vec<String>> {
    let doc = include_str!("../../../docs/config.md");
    let mut out = std::collections::BTreeMap::new();
    let mut section = "";
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = match h {
                "Top level" => "top",
                "`[[nodes]]`" => "nodes",
                "`[[streams]]`" => "streams",
                h if h.starts_with("`front`") => "front",
                "`[control]`" => "control",
                _ => "",
            };
            continue;
        }
        if let Some(rest) = line.strip_prefix("| `")
            && let Some((key, _)) = rest.split_once('`')
            && !section.is_empty()
        {
            out.entry(section)
                .or_insert_with(Vec::new)
                .push(key.to_string());
        }
    }
    out
}

/// The keys the parser accepts in a table: its "expected one of" list for an
/// unknown key.
fn accepted(text: &str) -> Vec<String> {
    let err = Config::parse(text, Path::new("/base")).unwrap_err();
    let list = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("no list of keys in: {err}"));
    let list = list.lines().next().unwrap();
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_reference_lists_every_key_the_parser_accepts_and_no_other() {
    let doc = documented();
    let stream = "[[streams]]\nname = \"a\"\nprimary = 1\n";
    let cases = [
        ("top", format!("zz_unknown = 1\n{BASE}")),
        ("nodes", format!("{BASE}zz_unknown = 1\n")),
        ("streams", format!("{BASE}{stream}zz_unknown = 1\n")),
        (
            "front",
            format!(
                "{BASE}{stream}front = {{ kind = \"mariadb\", primary = \"x:1\", \
                 user = \"u\", zz_unknown = 1 }}\n"
            ),
        ),
        ("control", format!("{BASE}[control]\nzz_unknown = 1\n")),
    ];
    for (section, text) in cases {
        let mut parser = accepted(&text);
        let mut listed = doc.get(section).cloned().unwrap_or_default();
        parser.sort();
        listed.sort();
        assert_eq!(listed, parser, "docs/config.md, section {section}");
    }
}

#[test]
fn the_reference_states_the_parsers_defaults() {
    let doc = include_str!("../../../docs/config.md");
    let row = |key: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("no row for {key}"))
            .to_string()
    };
    let c = parse("[[streams]]\nname = \"a\"\nprimary = 1\n[control]\n").unwrap();
    let s = &c.streams[0];
    let defaults = [
        ("request_timeout_ms", s.request_timeout_ms),
        ("ack_timeout_ms", s.settings.ack_timeout_ticks * TICK_MS),
        ("epoch", s.epoch),
        ("min_sync", s.settings.min_sync as u64),
        (
            "failover_timeout_ms",
            c.control.as_ref().unwrap().failover_timeout_ms,
        ),
    ];
    for (key, value) in defaults {
        let r = row(key);
        let cells: Vec<&str> = r.split('|').map(str::trim).collect();
        assert!(
            cells[3].starts_with(&value.to_string()),
            "{key}: the parser's default is {value}, the reference says {r}"
        );
    }
    assert!(row("mode").contains("| `strong` |"));
    assert!(row("on_insufficient").contains("| `block` |"));
    assert!(
        row("log_level").contains(&format!("| `{}` |", crate::server::logging::DEFAULT_FILTER))
    );
}

#[test]
fn a_top_level_key_below_a_table_gets_a_hint() {
    let e = parse("[[streams]]\nname = \"a\"\nprimary = 1\nsecret_file = \"s\"\n").unwrap_err();
    assert!(e.contains("secret_file is a top-level key"), "{e}");
    let e = parse("[[streams]]\nname = \"a\"\nprimary = 1\ncolour = 1\n").unwrap_err();
    assert!(!e.contains("top-level"), "{e}");
}
