//! The workflow tools as a user runs them: `validate` (located errors, exit 2), `test` (the
//! exact Intercom requests, snapshot-tested), `templates`, `schema` and `init`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn junction(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("junction runs")
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_points_at_the_file_line_and_rule() {
    let dir = fixtures();
    let broken = [
        "workflows/unknown-step.yaml",
        "workflows/bad-expression.yaml",
        "workflows/bad-trigger.yaml",
        "workflows/two-kinds.yaml",
        "workflows/nested-wait.yaml",
        "workflows/bad-duration.yaml",
        "workflows/not-yaml.yaml",
        "workflows/until-without-timeout.yaml",
        "workflows/bad-cap.yaml",
        "workflows/bad-quiet-hours.yaml",
        "workflows/bad-reentry.yaml",
    ];
    let mut report = String::new();
    for file in broken {
        let output = junction(&["validate", file], &dir);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{file}: {}",
            text(&output.stderr)
        );
        report.push_str(&text(&output.stderr));
    }
    insta::assert_snapshot!(report);

    let good = junction(&["validate", "workflows/good.yaml"], &dir);
    assert!(good.status.success(), "{}", text(&good.stderr));
    assert_eq!(
        text(&good.stdout),
        "workflows/good.yaml: ok — workflow `vip`, 1 top-level step(s), on segment.identify\n"
    );
    // Several files: all problems reported, exit 2.
    let mixed = junction(
        &[
            "validate",
            "workflows/good.yaml",
            "workflows/two-kinds.yaml",
            "workflows/bad-trigger.yaml",
        ],
        &dir,
    );
    assert_eq!(mixed.status.code(), Some(2));
    assert_eq!(
        text(&mixed.stderr).matches(".yaml:").count(),
        2,
        "{}",
        text(&mixed.stderr)
    );
}

#[test]
fn test_prints_the_plan_and_the_exact_requests() {
    let dir = fixtures();
    let output = junction(
        &["test", "profile-sync", "--event", "events/identify.json"],
        &dir,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    insta::assert_snapshot!("profile_sync_dry_run", text(&output.stdout));

    let output = junction(
        &[
            "test",
            "lead-score",
            "--event",
            "events/pricing.json",
            "--event",
            "events/demo.json",
            "--event",
            "events/feature.json",
            "--var",
            r#"sales_reps=["991267003"]"#,
        ],
        &dir,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    insta::assert_snapshot!("lead_score_dry_run", text(&output.stdout));

    let missing = junction(
        &[
            "test",
            "no-such-workflow",
            "--event",
            "events/identify.json",
        ],
        &dir,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("not a template name"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn templates_schema_and_init() {
    let dir = tempfile::tempdir().unwrap();
    let list = text(&junction(&["templates", "list"], dir.path()).stdout);
    for name in [
        "profile-sync",
        "event-message",
        "lead-score",
        "company-sync",
        "churn-risk",
        "onboarding",
        "inactivity",
        "track-events",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{list}"
        );
    }
    let show = junction(&["templates", "show", "inactivity"], dir.path());
    assert!(text(&show.stdout).contains("until: { event: Feature Used }"));
    assert_eq!(
        junction(&["templates", "show", "nope"], dir.path())
            .status
            .code(),
        Some(2)
    );

    let schema: serde_json::Value =
        serde_json::from_slice(&junction(&["schema"], dir.path()).stdout).unwrap();
    assert_eq!(schema["title"], "WorkflowFile");
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&"steps".into())
    );
    for key in ["reentry", "caps", "quiet_hours", "transactional"] {
        assert!(
            schema["properties"][key]["description"].is_string(),
            "the schema documents `{key}`"
        );
    }
    for key in ["until", "timeout", "on_timeout"] {
        assert!(
            schema["$defs"]["WaitDef"]["properties"][key].is_object(),
            "the schema has wait.{key}"
        );
    }

    let init = junction(
        &["init", "--templates", "profile-sync,lead-score"],
        dir.path(),
    );
    assert!(init.status.success(), "{}", text(&init.stderr));
    let check = junction(&["validate", "--config", "junction.yaml"], dir.path());
    assert_eq!(
        text(&check.stdout),
        "junction.yaml: ok — 2 workflow(s): profile-sync, lead-score\n",
        "{}",
        text(&check.stderr)
    );
    assert_eq!(
        junction(&["init"], dir.path()).status.code(),
        Some(2),
        "no overwrite without --force"
    );
}

/// The README's first command: `junction demo` delivers a day of events and shows what the
/// journey rules kept back — Ann's third message of the day capped, Eve's held through her
/// night — with everything else delivered.
#[test]
fn the_demo_delivers_and_shows_a_capped_and_a_held_message() {
    let dir = tempfile::tempdir().unwrap();
    let demo = junction(&["demo"], dir.path());
    let out = text(&demo.stdout);
    assert!(demo.status.success(), "{out}\n{}", text(&demo.stderr));
    assert!(out.contains("(0 failed)"), "{out}");
    assert!(
        out.contains("capped  ann   onboarding     workspace cap 2 per 1d reached"),
        "{out}"
    );
    assert!(out.contains("held    eve   event-message"), "{out}");
    assert!(
        out.contains("two-minute tour"),
        "the wait-until timed out: {out}"
    );
}
