//! A read-only team cache under a private one: team artifacts are used in
//! place (never copied), new ones go to the private cache, `cache promote`
//! publishes them in the team cache, and a damaged team copy is never used.

#[path = "support/cli.rs"]
mod cli;
use cli::*;
use std::path::Path;

const P: &str = "version: 1\nname: layered\nvars:\n  bshards: 2\nstages:\n  a:\n    op: debug_shards\n    seed: 3\n    shards: 3\n  b:\n    op: debug_shards\n    inputs: [a]\n    shards: ${bshards}\n";

fn team_files(team: &Path) -> Vec<(String, Vec<(String, String)>)> {
    artifacts(team)
}

#[test]
fn a_team_cache_is_read_in_place_and_added_to_only_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(dir.join("p.yaml"), P).unwrap();
    run_ok(&["run", "p.yaml", "--cache-dir", "team"], dir);
    let team_before = team_files(&dir.join("team"));
    assert_eq!(team_before.len(), 2);

    // Everything is in the team cache: planned and reported as team hits, nothing copied.
    let layered = ["--cache-dir", "private", "--team-cache", "team"];
    let plan = run_ok(&[&["plan", "p.yaml"][..], &layered].concat(), dir);
    assert!(plan.lines().filter(|l| l.contains("in the team cache")).count() == 2, "{plan}");
    run_ok(&[&["run", "p.yaml"][..], &layered].concat(), dir);
    assert_eq!(statuses(&dir.join("private")), both("hit (team)"));
    assert!(artifacts(&dir.join("private")).is_empty(), "nothing was copied into the private cache");

    // A changed downstream stage computes privately, reading `a` from the team cache in place.
    let changed = [&["run", "p.yaml", "--set", "bshards=3"][..], &layered].concat();
    run_ok(&changed, dir);
    let mut want = vec![("a".to_string(), "hit (team)".to_string()), ("b".to_string(), "ran".to_string())];
    want.sort();
    assert_eq!(statuses(&dir.join("private")), want);
    assert_eq!(artifacts(&dir.join("private")).len(), 1, "only the new artifact is private");
    assert_eq!(team_files(&dir.join("team")), team_before, "the team cache is untouched");
    run_ok(&["run", "p.yaml", "--set", "bshards=3", "--cache-dir", "alone"], dir);
    let new_b = payloads(&dir.join("private")).remove(0);
    assert!(payloads(&dir.join("alone")).contains(&new_b), "same bytes as without a team cache");

    // Asked to, the private artifact goes to the team cache; a fresh private cache then hits it.
    let out =
        run_ok(&["cache", "--cache-dir", "private", "promote", "p.yaml", "--set", "bshards=3", "--team", "team"], dir);
    assert!(out.contains("1 promoted, 1 already in"), "{out}");
    assert_eq!(team_files(&dir.join("team")).len(), 3);
    run_ok(&["cache", "--cache-dir", "team", "verify"], dir);
    run_ok(&["run", "p.yaml", "--set", "bshards=3", "--cache-dir", "fresh", "--team-cache", "team"], dir);
    assert_eq!(statuses(&dir.join("fresh")), both("hit (team)"));
    let status = run_ok(&["status", "p.yaml", "--cache-dir", "fresh", "--team-cache", "team"], dir);
    assert!(status.lines().filter(|l| l.contains("cached (team)")).count() == 2, "{status}");

    // The pipeline can name its team cache too.
    std::fs::write(dir.join("q.yaml"), P.replace("name: layered\n", "name: layered\ncache:\n  team: team\n")).unwrap();
    run_ok(&["run", "q.yaml", "--cache-dir", "other"], dir);
    assert_eq!(statuses(&dir.join("other")), both("hit (team)"));
}

#[test]
fn a_damaged_team_copy_is_computed_privately_and_left_alone() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(dir.join("p.yaml"), P).unwrap();
    run_ok(&["run", "p.yaml", "--cache-dir", "team"], dir);
    // Flip one byte of `a`'s payload in the team cache.
    let a_key = {
        let out = run_ok(&["plan", "p.yaml", "--cache-dir", "team"], dir);
        out.lines().find(|l| l.starts_with("a ")).unwrap().split_whitespace().nth(2).unwrap().to_string()
    };
    let a_dir = std::fs::read_dir(dir.join("team/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&a_key))
        .unwrap();
    let data = a_dir.join("data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&data, &bytes).unwrap();

    let layered = ["--cache-dir", "private", "--team-cache", "team"];
    let plan = run_ok(&[&["plan", "p.yaml"][..], &layered].concat(), dir);
    assert!(plan.contains("the team cache's copy is damaged"), "{plan}");
    run_ok(&[&["run", "p.yaml"][..], &layered].concat(), dir);
    let st = statuses(&dir.join("private"));
    assert_eq!(st[0], ("a".to_string(), "ran".to_string()), "{st:?}");
    assert_eq!(std::fs::read(&data).unwrap(), bytes, "the team copy is not ours to repair");
    assert_eq!(st[1], ("b".to_string(), "hit (team)".to_string()), "b's team copy is intact: {st:?}");
    run_ok(&["run", "p.yaml", "--cache-dir", "alone"], dir);
    let private_a = payloads(&dir.join("private")).remove(0);
    assert!(payloads(&dir.join("alone")).contains(&private_a), "the private a is the right one");
}
