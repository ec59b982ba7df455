//! An account's single writer for tests that run it as a process (the browser tests):
//! creates the stream `acct` and the bucket `acct_snap` if they are missing, goes on from
//! the account's snapshot in the bucket (so a second run continues its seqs), and appends
//! `--count` events (an order, a fill, a position, a balance in turn; see
//! `tickmesh_tests::accounts::sample`) one every `--every-ms`, printing each seq.
//!
//!     tickmesh-test-account-writer --url nats://127.0.0.1:4222 --account DEMO1 --count 20 --every-ms 250

use std::time::Duration;

use anyhow::{Context, bail};
use tickmesh_core::account;
use tickmesh_tests::accounts::Writer;

const USAGE: &str =
    "usage: tickmesh-test-account-writer --url NATS_URL --account NAME --count N --every-ms MS";

struct Args {
    url: String,
    account: String,
    count: usize,
    every: Duration,
}

fn args() -> anyhow::Result<Args> {
    let (mut url, mut account, mut count, mut every_ms) = (None, None, None, 0u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--account" => account = Some(value),
            "--count" => count = Some(value.parse().context("--count takes a number")?),
            "--every-ms" => every_ms = value.parse().context("--every-ms takes milliseconds")?,
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let account = account.context(USAGE)?;
    account::validate(&account)?;
    Ok(Args {
        url: url.context(USAGE)?,
        account,
        count: count.context(USAGE)?,
        every: Duration::from_millis(every_ms),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut writer = Writer::create(&args.url)
        .await
        .context("creating the stream and the bucket")?;
    let bucket = writer.js.get_key_value(account::SNAPSHOTS).await?;
    if let Some(bytes) = bucket.get(&args.account).await? {
        let snap = account::decode_snapshot(&bytes)?;
        writer.states.insert(args.account.clone(), snap);
    }
    for i in 0..args.count {
        if i > 0 {
            tokio::time::sleep(args.every).await;
        }
        let event = writer.append(&args.account).await?;
        println!(
            "{} {} {}",
            event.account,
            event.seq,
            event.data.kind().as_str()
        );
    }
    Ok(())
}
