//! `copyctl status` (no job: the service's health), `copyctl status
//! --verbose JOB`, `copyctl perf` and `copyctl alerts`: each a human table,
//! or JSON with --json.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{HumanBytes, HumanDuration};

use crate::connect::Service;
use crate::watch::JobSummary;

/// GetHealth's reply.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize, zbus::Type)]
#[zbus(signature = "a{sv}")]
#[serde(
    default,
    rename_all(deserialize = "PascalCase", serialize = "snake_case")
)]
pub struct Health {
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    version: String,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    uptime_seconds: u64,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    engines: Vec<String>,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    engines_unavailable: HashMap<String, String>,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    io_uring_queue_depth: u32,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    io_uring_buffer_bytes: u64,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    jobs_active: u32,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    jobs_queued: u32,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    jobs_paused: u32,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    jobs_interrupted: u32,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    checkpoint_dir: String,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    checkpoint_dir_writable: bool,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    checkpoint_problem: String,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    file_systems: Vec<(String, u64, u64, f64)>,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    errors_per_minute: f64,
    #[serde(deserialize_with = "zbus::as_variant::deserialize")]
    alerts: Vec<(String, String, String, u64)>,
}

type Alert = (String, String, String, u64);

fn alerts_json(alerts: &[Alert]) -> serde_json::Value {
    serde_json::Value::Array(
        alerts
            .iter()
            .map(|(id, severity, message, since)| {
                serde_json::json!({"id": id, "severity": severity, "message": message, "since_us": since})
            })
            .collect(),
    )
}

fn ago(since_us: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!(
        "{} ago",
        HumanDuration(Duration::from_micros(now.saturating_sub(since_us)))
    )
}

fn alert_lines(alerts: &[Alert]) -> Vec<String> {
    if alerts.is_empty() {
        return vec!["no alerts".into()];
    }
    let mut lines = vec![format!(
        "{:<28} {:<9} {:<16} MESSAGE",
        "ID", "SEVERITY", "SINCE"
    )];
    for (id, severity, message, since) in alerts {
        lines.push(format!(
            "{id:<28} {severity:<9} {:<16} {message}",
            ago(*since)
        ));
    }
    lines
}

async fn health(service: &Service) -> zbus::Result<Health> {
    let reply = service
        .connection
        .call_method(
            Some("org.example.Copyd1"),
            "/org/example/Copyd1",
            Some("org.example.Copyd1.Manager"),
            "GetHealth",
            &(),
        )
        .await?;
    reply.body().deserialize()
}

/// `copyctl status` with no job.
pub async fn status(service: &Service, json: bool) -> Result<Vec<String>, zbus::Error> {
    let h = health(service).await?;
    if json {
        let mut value = serde_json::to_value(&h).expect("health serializes");
        value["alerts"] = alerts_json(&h.alerts);
        value["file_systems"] = serde_json::Value::Array(
            h.file_systems
                .iter()
                .map(|(mount, free, total, used)| {
                    serde_json::json!({"mount_point": mount, "free_bytes": free, "total_bytes": total, "used_percent": used})
                })
                .collect(),
        );
        return Ok(vec![value.to_string()]);
    }
    let mut lines = vec![
        format!(
            "copyd {}, up {}",
            h.version,
            HumanDuration(Duration::from_secs(h.uptime_seconds))
        ),
        format!("engines:      {}", h.engines.join(", ")),
    ];
    let mut missing: Vec<_> = h.engines_unavailable.iter().collect();
    missing.sort();
    for (engine, why) in missing {
        lines.push(format!("  not {engine}: {why}"));
    }
    lines.push(format!(
        "jobs:         {} active, {} queued, {} paused, {} interrupted",
        h.jobs_active, h.jobs_queued, h.jobs_paused, h.jobs_interrupted
    ));
    lines.push(if h.checkpoint_dir_writable {
        format!("checkpoints:  {} (writable)", h.checkpoint_dir)
    } else {
        format!(
            "checkpoints:  {} NOT WRITABLE: {}",
            h.checkpoint_dir, h.checkpoint_problem
        )
    });
    if h.file_systems.is_empty() {
        lines.push("free space:   (no unfinished job writes anywhere)".into());
    } else {
        lines.push("free space where jobs write:".into());
        for (mount, free, total, used) in &h.file_systems {
            lines.push(format!(
                "  {mount:<24} {:>11} free of {:>11}  {used:>3.0}% used",
                HumanBytes(*free).to_string(),
                HumanBytes(*total).to_string()
            ));
        }
    }
    lines.push(format!(
        "errors:       {:.1} per minute over the last 5 minutes",
        h.errors_per_minute
    ));
    lines.push(format!("alerts:       {}", h.alerts.len()));
    if !h.alerts.is_empty() {
        lines.extend(alert_lines(&h.alerts).into_iter().map(|l| format!("  {l}")));
    }
    Ok(lines)
}

/// `copyctl alerts`.
pub async fn alerts(service: &Service, json: bool) -> Result<Vec<String>, zbus::Error> {
    let alerts = health(service).await?.alerts;
    if json {
        return Ok(vec![alerts_json(&alerts).to_string()]);
    }
    Ok(alert_lines(&alerts))
}

/// `copyctl perf`.
pub async fn perf(service: &Service, json: bool) -> Result<Vec<String>, zbus::Error> {
    let reply = service
        .connection
        .call_method(
            Some("org.example.Copyd1"),
            "/org/example/Copyd1",
            Some("org.example.Copyd1.Manager"),
            "GetPerformance",
            &(),
        )
        .await?;
    let text: String = reply.body().deserialize()?;
    if json {
        return Ok(vec![text]);
    }
    let r: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| zbus::Error::Failure(format!("GetPerformance: {err}")))?;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mut lines = vec![format!(
        "since copyd started ({} ago): {} in {} files",
        HumanDuration(Duration::from_secs(n(&r["uptime_seconds"]))),
        HumanBytes(n(&r["bytes"])),
        n(&r["files"])
    )];
    lines.push(format!(
        "{:<16} {:>12} {:>14} {:>6}",
        "ENGINE", "BYTES", "THROUGHPUT", "JOBS"
    ));
    if let Some(engines) = r["engines"].as_object() {
        for (name, e) in engines {
            lines.push(format!(
                "{name:<16} {:>12} {:>12}/s {:>6}",
                HumanBytes(n(&e["bytes"])).to_string(),
                HumanBytes(f(&e["throughput_bytes_per_second"]) as u64).to_string(),
                n(&e["operations"])
            ));
        }
    }
    let q = &r["queue_wait_seconds"];
    lines.push(format!(
        "queue wait:   median {:.3} s, p90 {:.3} s, max {:.3} s (last {} jobs)",
        f(&q["median"]),
        f(&q["p90"]),
        f(&q["max"]),
        n(&q["samples"])
    ));
    let outcomes: Vec<String> = r["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            format!(
                "{} {} {}",
                j["operation"].as_str().unwrap_or(""),
                j["state"].as_str().unwrap_or(""),
                n(&j["count"])
            )
        })
        .collect();
    lines.push(format!(
        "jobs ended:   {}",
        if outcomes.is_empty() {
            "none".to_owned()
        } else {
            outcomes.join(", ")
        }
    ));
    let choices: Vec<String> = r["engine_choices_recent"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(engine, count)| format!("{engine} {}", n(count)))
        .collect();
    lines.push(format!(
        "auto chose:   {} (the engine that moved most of each of the last {} jobs)",
        if choices.is_empty() {
            "-".to_owned()
        } else {
            choices.join(", ")
        },
        n(&r["recent_jobs"])
    ));
    lines.push("slowest recent jobs:".into());
    lines.push(format!(
        "  {:>6} {:<5} {:<10} {:>10} {:>12} {:>7}  ENGINE",
        "ID", "OP", "STATE", "SECONDS", "BYTES", "FILES"
    ));
    for j in r["slowest_recent_jobs"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {:>6} {:<5} {:<10} {:>10.3} {:>12} {:>7}  {}",
            j["id"].as_str().unwrap_or(""),
            j["operation"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            f(&j["duration_seconds"]),
            HumanBytes(n(&j["bytes"])).to_string(),
            n(&j["files"]),
            j["main_engine"].as_str().unwrap_or("")
        ));
    }
    Ok(lines)
}

/// What `status --verbose JOB` adds: for each pair of file systems the job
/// copied between, the engines that moved its bytes and why the daemon's
/// transfer chose them (the job's Routes).
pub fn engine_choices(summary: &JobSummary, engines: &[String], json: bool) -> Vec<String> {
    if json {
        let value = serde_json::json!({
            "routes": summary.routes,
            "engine_bytes": summary.engine_bytes,
            "engines_available": engines,
        });
        return vec![value.to_string()];
    }
    let mut lines = vec![format!("  engines available: {}", engines.join(", "))];
    if summary.routes.is_empty() {
        lines.push("  no bytes moved yet".into());
    }
    for route in &summary.routes {
        lines.push(format!(
            "  {} -> {}: {} file{}",
            route.source,
            route.destination,
            route.files,
            if route.files == 1 { "" } else { "s" }
        ));
        let mut used: Vec<(&String, &u64)> = route.engine_bytes.iter().collect();
        used.sort_by(|a, b| b.1.cmp(a.1));
        for (engine, bytes) in used {
            lines.push(format!("    {engine:<16} {}", HumanBytes(*bytes)));
        }
        for why in &route.why {
            lines.push(format!("    why: {why}"));
        }
    }
    lines
}
