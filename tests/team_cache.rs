//! A team cache on a shared file system: a cache directory with the setgid
//! bit is written by two users of one group. The second user reuses the first
//! one's artifacts, rebuilds one of them (replacing a generation the first
//! user published) and collects garbage. Needs root to make the user and the
//! group (scripts/test.sh runs as root); without it the test says so and
//! skips, except under `CI=true`.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const GROUP: &str = "saepipe-team";
const USER: &str = "saepipe-bob";

fn ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// The group and its second member, made once.
fn second_user() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ready = root
        && (ok(Command::new("getent").args(["group", GROUP])) || ok(Command::new("groupadd").arg(GROUP)))
        && (ok(Command::new("id").arg(USER))
            || ok(Command::new("useradd").args(["-M", "-N", "-g", GROUP, "-s", "/bin/sh", USER])));
    if !ready {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("cannot make the user {USER} in group {GROUP}; the team-cache test needs root");
        }
        eprintln!("SKIPPED: making a second user needs root (run through scripts/test.sh)");
    }
    ready
}

/// `saepipe ARGS` as the second user, with a umask that would keep the
/// group out (022), so only the cache's setgid bit can let the group in.
fn as_bob(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args([
            "-u",
            USER,
            "-g",
            GROUP,
            "--",
            "sh",
            "-c",
            "umask 022 && exec \"$@\"",
            "sh",
            env!("CARGO_BIN_EXE_saepipe"),
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const CHAIN: &str = "version: 1\nname: team\nstages:\n  a:\n    op: debug_shards\n    seed: 3\n    shards: 3\n  b:\n    op: debug_shards\n    inputs: [a]\n    shards: 2\n";

#[test]
fn two_users_of_a_group_share_a_setgid_cache() {
    if !second_user() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(t.path().join("p.yaml"), CHAIN).unwrap();
    std::fs::set_permissions(t.path().join("p.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let cache = t.path().join("team");
    std::fs::create_dir(&cache).unwrap();
    assert!(ok(Command::new("chgrp").args([GROUP, cache.to_str().unwrap()])));
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o2770)).unwrap();

    // The first user (this process, umask 022) computes everything.
    let old = unsafe { libc::umask(0o022) };
    let out = run(&["run", "p.yaml", "--cache-dir", "team"], t.path());
    unsafe { libc::umask(old) };
    assert!(out.status.success());
    let gid = std::fs::metadata(&cache).unwrap().gid();
    for entry in walk(&cache) {
        let m = std::fs::symlink_metadata(&entry).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode();
        assert_eq!(m.gid(), gid, "{} belongs to the cache's group", entry.display());
        assert_eq!((mode >> 3) & 0o7, (mode >> 6) & 0o7, "{}: group bits like the owner's ({mode:o})", entry.display());
        if m.is_dir() {
            assert!(mode & 0o2000 != 0, "{} keeps the setgid bit", entry.display());
        }
        assert_eq!(mode & 0o002, 0, "{}: the umask still keeps others from writing", entry.display());
    }

    // The second user: hits on the first one's work, then a rebuild of b and a gc.
    let o = as_bob(t.path(), &["run", "p.yaml", "--cache-dir", "team"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).lines().filter(|l| l.contains(" hit ")).count() == 2, "{}", text(&o));
    let o = as_bob(t.path(), &["run", "p.yaml", "--cache-dir", "team", "--force", "b"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).lines().any(|l| l.starts_with("b ") && l.contains(" ran ")), "{}", text(&o));
    let o = as_bob(t.path(), &["cache", "--cache-dir", "team", "gc", "p.yaml", "--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = as_bob(t.path(), &["cache", "--cache-dir", "team", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    // And the first user goes on using what the second one published.
    let o = run(&["run", "p.yaml", "--cache-dir", "team"], t.path());
    assert!(o.status.success());
    assert_eq!(statuses(&cache), both("hit"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
