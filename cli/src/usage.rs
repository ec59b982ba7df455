//! `tickmesh usage`: reads a month of usage records from the stream the edges write
//! (one or more NATS systems: each region keeps its own) and writes the report
//! ([`tickmesh_core::usage::Report`]): unique users per feed, class and use, or one line
//! per user.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::json;
use tickmesh_core::date;
use tickmesh_core::usage::{self, Month, Record, Report};
use tickmesh_service::nats::{NatsAuth, NatsTls};

use crate::args::{ReportFormat, UsageArgs};

/// The longest wait for one NATS answer or one record.
const WAIT: Duration = Duration::from_secs(10);

/// The report of `month`, rendered as `args` asks.
pub async fn report(args: &UsageArgs, month: Month) -> anyhow::Result<String> {
    let tls = NatsTls {
        ca_file: args.ca.clone(),
        ..NatsTls::default()
    };
    let auth = NatsAuth {
        user: args.user.clone(),
        password_file: args.password_file.clone(),
        creds_file: args.creds.clone(),
    };
    tls.validate()
        .map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
    auth.validate()
        .map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
    let mut records = Vec::new();
    let mut skipped = 0;
    for url in &args.nats {
        let (read, bad) = read_month(url, &tls, &auth, &args.stream, month)
            .await
            .with_context(|| format!("reading the usage records at {url}"))?;
        records.extend(read);
        skipped += bad;
    }
    let mut report = Report::build(month, records);
    report.skipped += skipped;
    if report.skipped > 0 {
        eprintln!(
            "tickmesh: {} record(s) skipped (unreadable or of another month)",
            report.skipped
        );
    }
    Ok(render(&report, args.format, args.users))
}

/// Every record of `month` in the stream at `url`, and how many did not parse.
async fn read_month(
    url: &str,
    tls: &NatsTls,
    auth: &NatsAuth,
    stream: &str,
    month: Month,
) -> anyhow::Result<(Vec<Record>, u64)> {
    let options = tickmesh_service::nats::options(tls, auth)
        .await?
        .connection_timeout(WAIT);
    let client = tokio::time::timeout(WAIT, options.connect(url))
        .await
        .context("no answer")??;
    let js = jetstream::new(client);
    let stream = match tokio::time::timeout(WAIT, js.get_stream(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            bail!("no stream {stream:?} ({e}): has an edge with [usage] enabled run here?")
        }
        Err(_) => bail!("no answer from JetStream"),
    };
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: usage::month_filter(month),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("reading the stream")?;
    let pending = consumer
        .info()
        .await
        .context("reading the stream")?
        .num_pending;
    let mut records = Vec::new();
    let mut bad = 0;
    if pending == 0 {
        return Ok((records, bad));
    }
    let mut messages = consumer.messages().await.context("reading the stream")?;
    let mut read = 0;
    while read < pending {
        let msg = match tokio::time::timeout(WAIT, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => bail!("reading the stream: {e}"),
            Ok(None) => bail!("the stream ended after {read} of {pending} records"),
            Err(_) => bail!("no record for {WAIT:?} after {read} of {pending}"),
        };
        read += 1;
        let parsed = (msg.payload.len() <= usage::MAX_RECORD_BYTES)
            .then(|| serde_json::from_slice::<Record>(&msg.payload).ok())
            .flatten();
        match parsed {
            Some(r) => records.push(r),
            None => bad += 1,
        }
    }
    Ok((records, bad))
}

/// The report as text, CSV or JSON.
pub fn render(report: &Report, format: ReportFormat, users: bool) -> String {
    match (format, users) {
        (ReportFormat::Csv, false) => report.summary_csv(),
        (ReportFormat::Csv, true) => report.users_csv(),
        (ReportFormat::Text, false) => report.summary_text(),
        (ReportFormat::Text, true) => report.users_csv(),
        (ReportFormat::Json, _) => {
            let summary: Vec<_> = report
                .summary()
                .into_iter()
                .map(|l| {
                    json!({"feed": l.feed, "class": l.class, "use": l.usage, "users": l.users,
                        "accounts": l.orgs, "sessions": l.sessions})
                })
                .collect();
            let mut out = json!({"month": report.month.to_string(), "summary": summary});
            if users {
                out["users"] = report
                    .users
                    .iter()
                    .map(|u| {
                        json!({"feed": u.feed, "class": u.class, "use": u.usage, "user": u.user,
                            "accounts": u.orgs, "first_seen": date::rfc3339_seconds(u.first_us),
                            "last_seen": date::rfc3339_seconds(u.last_us), "sessions": u.sessions})
                    })
                    .collect();
            }
            format!("{out}\n")
        }
    }
}
