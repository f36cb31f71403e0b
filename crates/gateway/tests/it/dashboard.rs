//! The live dashboard in a real headless Chromium against a real gateway: the page connects
//! with a monitor token from its address, shows traffic as it happens (charts, feed, alerts),
//! works from the keyboard, and runs without a console error or a CSP violation.
//!
//! Needs Chromium (`apt-get install chromium`, or `$CHROMIUM`); without it the test says so
//! and passes, unless `SOVEREIGN_REQUIRE_BROWSER=1`.

use std::time::{Duration, Instant};

use crate::cdp::{Browser, Page};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::Value;

const PROFILE: &str = r#"{"email":"ada@example.com","birthdate":"1990-01-02","phone":"+1 555 0100","display_name":"Ada"}"#;

/// What the test reads from the page on each poll.
const PAGE_STATE: &str = r#"(() => {
  // The page may still be parsing: the charts can exist before the feed below them does.
  if (document.readyState === 'loading') return null;
  const rate = document.getElementById('rate-chart');
  const locations = document.getElementById('location-chart');
  if (!rate || !locations) return null; // Not drawn yet.
  return {
    status: document.getElementById('status').dataset.state,
    statusText: document.getElementById('status').textContent,
    total: Number(rate.dataset.total || 0),
    updated: rate.dataset.updated || '',
    locationTotal: Number(locations.dataset.total || 0),
    locations: [...locations.querySelectorAll('[data-location]')].map((e) => e.dataset.location),
    outcomes: [...document.querySelectorAll('#feed tbody tr')].map((r) => r.dataset.outcome),
    feedText: document.querySelector('#feed tbody').innerText,
    alerts: [...document.querySelectorAll('#alerts li[data-alert]')].map((li) => li.dataset.alert),
    hash: location.hash,
    stored: sessionStorage.getItem('sovereign.token') !== null,
  };
})()"#;

/// Polls the page every 200 ms until it is loaded and `done` holds, or panics after `timeout` with what the
/// page shows.
fn wait_for(
    page: &mut Page,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let state = page.eval(PAGE_STATE);
        if !state.is_null() && done(&state) {
            return state;
        }
        if Instant::now() > deadline {
            let text = page
                .eval("document.body.innerText")
                .as_str()
                .unwrap_or("")
                .to_string();
            let excerpt: String = text.chars().take(2500).collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}\npage state: {state:#}\n\
                 page text:\n{excerpt}\nproblems: {:#?}",
                page.problems()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs blocking browser work off the runtime's workers (the gateway runs on them), and
/// passes its panic on as the test's.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_traffic() {
    let Some(chromium) = crate::cdp::find_browser() else {
        if std::env::var("SOVEREIGN_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!(
                "SOVEREIGN_REQUIRE_BROWSER=1 but no chromium found: apt-get install chromium, \
                 or set CHROMIUM to a Chromium or Chrome binary"
            );
        }
        eprintln!("skipping: no chromium found (apt-get install chromium)");
        return;
    };
    let server = Server::start().await;
    let url = format!("{}/#token={}", server.base, server.token(&MONITOR));

    // The page connects with the token of its address, then drops it from there.
    let (browser, mut page, initial) = blocking(move || {
        let browser = Browser::launch(&chromium);
        let mut page = browser.open_page();
        page.navigate(&url);
        let state = wait_for(
            &mut page,
            "the stream to connect",
            Duration::from_secs(15),
            |s| s["status"] == "connected" && !s["updated"].as_str().unwrap_or("").is_empty(),
        );
        (browser, page, state)
    })
    .await;
    assert_eq!(
        initial["hash"], "",
        "the token stays in the address: {initial:#}"
    );
    assert_eq!(initial["stored"], true, "{initial:#}");
    let initial_total = initial["total"].as_u64().unwrap();

    // Traffic: vetted US staff write and read; parent staff in CN and a usds engineer
    // travelling in CN are denied (and the first raises a restricted-country alert).
    let alice = server.token(&VETTED_US);
    for id in ["u-2001", "u-2002", "u-2003"] {
        server.register_us(&alice, id).await;
        let record = format!("/v1/subjects/{id}/records/profile/main");
        server
            .put(&record)
            .bearer(&alice)
            .purpose("account setup")
            .body(PROFILE)
            .expect(StatusCode::OK)
            .await;
        server
            .get(&record)
            .bearer(&alice)
            .purpose("support ticket 42")
            .expect(StatusCode::OK)
            .await;
    }
    let record = "/v1/subjects/u-2001/records/profile/main";
    // Chen twice: one alert line, counted ×2.
    for who in [&PARENT_CN, &USDS_TRAVELLING_CN, &PARENT_CN] {
        let token = server.token(who);
        let Reply { status, body, .. } =
            server.get(record).bearer(&token).purpose("debugging").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{} read: {body}", who.sub);
    }

    let base = server.base.clone();
    let engineer = server.token(&VETTED_US);
    let garbage = "not-a-jwt".to_string();
    let png = blocking(move || {
        let live = wait_for(
            &mut page,
            "the traffic on the page",
            Duration::from_secs(20),
            |s| {
                let outcomes = s["outcomes"].as_array().cloned().unwrap_or_default();
                let total = s["total"].as_u64().unwrap_or(0);
                total > 0
                    && total != initial_total
                    && outcomes.contains(&"deny".into())
                    && outcomes.contains(&"allow".into())
                    && s["alerts"]
                        .as_array()
                        .is_some_and(|a| a.contains(&"restricted-country-access".into()))
                    && s["locations"]
                        .as_array()
                        .is_some_and(|l| l.contains(&"CN".into()))
            },
        );
        let feed = live["feedText"].as_str().unwrap();
        assert!(
            feed.contains("alice") && feed.contains("chen"),
            "feed: {feed}"
        );
        assert!(live["locationTotal"].as_u64().unwrap() > 0, "{live:#}");
        // Subjects are pseudonyms: no raw id reaches the page.
        let text = page.eval("document.body.innerText");
        assert!(
            !text.as_str().unwrap().contains("u-2001"),
            "a raw subject id is shown"
        );

        // The same alert again is one line with its count, not a second line.
        let chen_alerts = r#"(() => [...document.querySelectorAll('#alerts li[data-alert]')]
              .filter((li) => li.textContent.includes('chen'))
              .map((li) => li.querySelector('.alert-count').textContent))()"#;
        let deadline = Instant::now() + Duration::from_secs(10);
        let counts = loop {
            let counts = page.eval(chen_alerts);
            if counts == serde_json::json!(["×2"]) || Instant::now() > deadline {
                break counts;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(counts, serde_json::json!(["×2"]), "chen's repeated alert");

        // Why a decision came out as it did: a denial in CN names the forbid that decided
        // it, and the purpose stated.
        let why = page.eval(
            r#"(() => {
              const row = [...document.querySelectorAll('#feed tbody tr')]
                .find((tr) => tr.textContent.includes('chen'));
              if (!row) return null;
              const details = row.querySelector('td.why details');
              details.querySelector('summary').click();
              return { open: details.open, text: details.innerText };
            })()"#,
        );
        assert_eq!(why["open"], true, "{why}");
        let text = why["text"].as_str().unwrap();
        assert!(
            text.contains("forbid-restricted-location") && text.contains("debugging"),
            "{text}"
        );

        // A log index in the feed opens its entry, read from the log's entry bundle.
        // The oldest shown, clicked again while it waits for a checkpoint to cover it.
        let click = r#"(() => {
              const buttons = document.querySelectorAll('#feed button[data-index]');
              if (!buttons.length) return null;
              const button = buttons[buttons.length - 1];
              button.click();
              return Number(button.dataset.index);
            })()"#;
        let deadline = Instant::now() + Duration::from_secs(10);
        let (index, shown) = loop {
            let index = page.eval(click).as_u64().expect("a log index in the feed");
            std::thread::sleep(Duration::from_millis(300));
            let shown = page.eval("document.getElementById('entry-json').textContent");
            let text = shown.as_str().unwrap_or("").to_string();
            if text.contains("\"kind\"") || Instant::now() > deadline {
                break (index, text);
            }
        };
        let entry: Value = serde_json::from_str(&shown)
            .unwrap_or_else(|e| panic!("entry {index} shown is not JSON ({e}): {shown}"));
        assert_eq!(entry["kind"], "access", "{entry}");
        assert!(!shown.contains("u-2001"), "a raw subject id is shown");

        let png = page.screenshot();

        // The keyboard reaches the page's controls, and focus is visible.
        page.call("Page.bringToFront", serde_json::json!({}));
        let mut focused = Vec::new();
        for _ in 0..4 {
            page.press("Tab", "Tab", 9);
            let active = page.eval(
                r#"(() => {
                  const a = document.activeElement;
                  if (!a || a === document.body || a === document.documentElement) return null;
                  return { what: `${a.tagName.toLowerCase()}#${a.id}.${a.className}`,
                           inPage: document.body.contains(a),
                           outline: getComputedStyle(a).outlineStyle };
                })()"#,
            );
            assert!(
                active.is_object() && active["inPage"] == true,
                "Tab left the focus on the body (after {focused:?})"
            );
            assert_ne!(active["outline"], "none", "no visible focus on {active}");
            focused.push(active["what"].as_str().unwrap().to_string());
        }
        eprintln!("Tab order: {focused:?}");

        let problems = page.problems();
        assert!(
            problems.is_empty(),
            "the page reported problems:\n{}",
            problems.join("\n")
        );

        // Refused tokens: said so, with the form to paste another, and no retrying.
        for (token, expected) in [
            (engineer, "lacks the monitor role"),
            (garbage, "token refused"),
        ] {
            page.navigate(&format!("{base}/#token={token}"));
            let what = format!("the status to say {expected:?}");
            wait_for(&mut page, &what, Duration::from_secs(10), |s| {
                s["status"] == "error" && s["statusText"].as_str().unwrap().contains(expected)
            });
            let form_shown = page.eval("!document.getElementById('token-form').hidden");
            assert_eq!(form_shown, true, "no token form after {expected:?}");
        }

        drop(page);
        drop(browser); // Closes the stream before the gateway stops.
        png
    })
    .await;

    let path = concat!(env!("CARGO_TARGET_TMPDIR"), "/dashboard.png");
    std::fs::write(path, &png).unwrap();
    eprintln!("screenshot: {path} ({} bytes)", png.len());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a suspiciously small screenshot: {} bytes",
        png.len()
    );

    server.stop().await;
}
