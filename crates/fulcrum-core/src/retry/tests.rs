use super::*;

fn policy() -> RetryPolicy {
    RetryPolicy {
        on: RetryOn {
            reset: true,
            timeout: true,
            statuses: vec![502, 503, 504],
        },
        max_retries: 2,
        per_try_timeout: None,
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        idempotency_key: true,
        buffer_bytes: 65536,
        budget: BudgetSettings::default(),
    }
}

fn attempted(method: &'static str) -> Attempted<'static> {
    Attempted {
        method: method.as_bytes(),
        has_idempotency_key: false,
        body_replayable: true,
        response_started: false,
        retries: 0,
    }
}

#[test]
fn what_may_be_retried_follows_the_method_the_failure_and_the_response() {
    let p = policy();
    let get = attempted("GET");
    let post = attempted("POST");
    let rows: Vec<(&str, Failure, Attempted<'_>, bool)> = vec![
        ("a GET reset", Failure::Reset, get, true),
        ("a GET timed out", Failure::Timeout, get, true),
        ("a GET answered 503", Failure::Status(503), get, true),
        (
            "a GET answered 500 (not in retry_on)",
            Failure::Status(500),
            get,
            false,
        ),
        (
            "PUT and DELETE are idempotent",
            Failure::Reset,
            attempted("PUT"),
            true,
        ),
        ("so is DELETE", Failure::Reset, attempted("DELETE"), true),
        (
            "a POST reset after it was sent",
            Failure::Reset,
            post,
            false,
        ),
        ("a POST answered 502", Failure::Status(502), post, false),
        ("a POST that never connected", Failure::Connect, post, true),
        (
            "a POST with an Idempotency-Key",
            Failure::Reset,
            Attempted {
                has_idempotency_key: true,
                ..post
            },
            true,
        ),
        (
            "once the response started, never",
            Failure::Reset,
            Attempted {
                response_started: true,
                ..get
            },
            false,
        ),
        (
            "not even a connect failure",
            Failure::Connect,
            Attempted {
                response_started: true,
                ..get
            },
            false,
        ),
        (
            "a body no longer held",
            Failure::Reset,
            Attempted {
                body_replayable: false,
                ..attempted("PUT")
            },
            false,
        ),
        (
            "after max_retries",
            Failure::Reset,
            Attempted { retries: 2, ..get },
            false,
        ),
        (
            "one before it",
            Failure::Reset,
            Attempted { retries: 1, ..get },
            true,
        ),
        (
            "methods are case-sensitive",
            Failure::Reset,
            attempted("get"),
            false,
        ),
    ];
    for (what, failure, request, want) in rows {
        assert_eq!(p.allows(failure, &request), want, "{what}");
    }
    let strict = RetryPolicy {
        idempotency_key: false,
        ..policy()
    };
    let keyed = Attempted {
        has_idempotency_key: true,
        ..post
    };
    assert!(
        !strict.allows(Failure::Reset, &keyed),
        "only where the pool allows it"
    );
    let quiet = RetryPolicy {
        on: RetryOn::default(),
        ..policy()
    };
    assert!(!quiet.allows(Failure::Reset, &get) && quiet.allows(Failure::Connect, &get));
}

#[test]
fn backoff_is_full_jitter_under_a_doubling_ceiling() {
    let p = policy();
    let ms = Duration::from_millis;
    assert_eq!(p.backoff(1, 0), Duration::ZERO);
    for (retry, max) in [
        (1, ms(25)),
        (2, ms(50)),
        (3, ms(100)),
        (4, ms(200)),
        (5, ms(250)),
        (40, ms(250)),
    ] {
        for random in [1u64, 7, 1 << 20, 123_456_789, u64::MAX / 3, u64::MAX] {
            let wait = p.backoff(retry, random);
            assert!(wait <= max, "retry {retry}: {wait:?} > {max:?}");
        }
        let nanos = max.as_nanos() as u64;
        assert_eq!(
            p.backoff(retry, nanos),
            max,
            "retry {retry}: the ceiling is reachable"
        );
    }
    let none = RetryPolicy {
        backoff_base: Duration::ZERO,
        ..policy()
    };
    assert_eq!(none.backoff(3, 99), Duration::ZERO);
}

#[test]
fn the_budget_allows_a_fifth_of_the_requests_plus_three_per_window() {
    let budget = RetryBudget::new(BudgetSettings::default());
    let s = Duration::from_secs;
    // No traffic yet: the three always allowed.
    assert!(budget.try_retry(s(0)) && budget.try_retry(s(0)) && budget.try_retry(s(0)));
    assert!(!budget.try_retry(s(0)));
    // 100 requests buy 20 retries more.
    for _ in 0..100 {
        budget.request(s(1));
    }
    let granted = (0..50).filter(|_| budget.try_retry(s(1))).count();
    assert_eq!(granted, 20);
    // A whole failing pool: N requests cost at most N × 1.2 + 3 attempts in a window.
    let fresh = RetryBudget::new(BudgetSettings::default());
    let mut attempts = 0;
    for i in 0..500u64 {
        let now = Duration::from_millis(i * 10); // 5 s: within one window
        fresh.request(now);
        attempts += 1;
        for _ in 0..2 {
            if fresh.try_retry(now) {
                attempts += 1;
            }
        }
    }
    assert!(
        attempts <= 500 * 12 / 10 + 3,
        "{attempts} attempts for 500 requests"
    );
    assert_eq!(attempts, 500 + 100 + 3);
}

#[test]
fn old_seconds_leave_the_window() {
    let settings = BudgetSettings {
        window: Duration::from_secs(10),
        ..BudgetSettings::default()
    };
    let budget = RetryBudget::new(settings);
    let s = Duration::from_secs;
    for _ in 0..50 {
        budget.request(s(0));
    }
    assert_eq!(budget.window_counts(s(9)), (50, 0));
    assert_eq!(
        budget.window_counts(s(10)),
        (0, 0),
        "second 0 is out of [1, 10]"
    );
    for _ in 0..13 {
        assert!(budget.try_retry(s(5)));
    }
    assert!(!budget.try_retry(s(5)), "10 + 3 spent");
    // A minute later the ring's bucket for second 0 is reused, emptied.
    budget.request(s(60));
    assert_eq!(budget.window_counts(s(60)), (1, 0));
    assert!(budget.try_retry(s(60)));
}
