//! Providers, the ambiguous submit: found again instead of paid twice, where the vendor
//! can list requests.

use super::*;

#[tokio::test]
async fn an_ambiguous_submit_is_found_again_and_paid_once() {
    let s = setup_with(
        render(Duration::from_millis(400)),
        Duration::from_millis(500),
    )
    .await;
    for kind in [ProviderKind::BytePlus, ProviderKind::Replicate] {
        let p = s.get(kind);
        // Another generation's job of the same model, created just before.
        let other = p.submit(&request(kind)).await.unwrap();
        let since = Utc::now() - chrono::Duration::minutes(5);
        s.fault(json!({"provider": kind, "op": "submit", "fault": "accept_then_hang"}))
            .await;
        let req = request(kind);
        let started = Instant::now();
        let err = p.submit(&req).await.unwrap_err();
        assert!(err.is_ambiguous(), "{kind}: {err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the client timeout applies"
        );

        let found = p
            .find_submitted(&req, since)
            .await
            .unwrap()
            .expect("the job the submit created");
        assert_ne!(
            found.request_id, other.request_id,
            "{kind}: matched another generation's job"
        );
        // The adopted id is a real job that runs to its end.
        let (end, _) = run_to_end(p.as_ref(), &found).await;
        assert!(
            matches!(end, RemoteStatus::Succeeded { .. }),
            "{kind}: {end:?}"
        );
        // A generation that never reached the provider is provably absent.
        assert_eq!(
            p.find_submitted(&request(kind), since).await.unwrap(),
            None,
            "{kind}"
        );

        let stats = s.stats().await;
        assert_eq!(stats.ops(kind, FakeOp::Submit), 2, "{kind}");
        assert_eq!(
            stats.created(kind),
            2,
            "{kind}: the ambiguous submit created exactly one job"
        );
    }
}

#[tokio::test]
async fn fal_cannot_reconcile_an_ambiguous_submit() {
    let s = setup_with(
        render(Duration::from_millis(400)),
        Duration::from_millis(500),
    )
    .await;
    let p = s.get(ProviderKind::Fal);
    s.fault(json!({"provider": "fal", "op": "submit", "fault": "accept_then_hang"}))
        .await;
    let req = request(ProviderKind::Fal);
    let err = p.submit(&req).await.unwrap_err();
    assert!(err.is_ambiguous(), "{err:?}");
    let err = p.find_submitted(&req, Utc::now()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message } if message.contains("cannot be reconciled")),
        "{err:?}"
    );
    assert_eq!(s.stats().await.created(ProviderKind::Fal), 1);
}

#[tokio::test]
async fn reconciliation_pages_through_the_list_and_stops_at_since() {
    let s = setup().await;
    let p = s.get(ProviderKind::Replicate);
    s.fault(json!({"provider": "replicate", "op": "submit", "fault": "malformed_json"}))
        .await;
    let req = request(ProviderKind::Replicate);
    let err = p.submit(&req).await.unwrap_err();
    assert!(
        err.is_ambiguous(),
        "an unreadable success is ambiguous: {err:?}"
    );
    for _ in 0..fake::REPLICATE_PAGE_SIZE + 2 {
        p.submit(&request(ProviderKind::Replicate)).await.unwrap();
    }
    let since = Utc::now() - chrono::Duration::minutes(5);
    let lists = s.stats().await.ops(ProviderKind::Replicate, FakeOp::List);
    assert!(p.find_submitted(&req, since).await.unwrap().is_some());
    assert_eq!(
        s.stats().await.ops(ProviderKind::Replicate, FakeOp::List),
        lists + 2,
        "found on page 2"
    );

    // A window that starts after every job ends after one page.
    let lists = s.stats().await.ops(ProviderKind::Replicate, FakeOp::List);
    let later = Utc::now() + chrono::Duration::minutes(5);
    assert_eq!(
        p.find_submitted(&request(ProviderKind::Replicate), later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.stats().await.ops(ProviderKind::Replicate, FakeOp::List),
        lists + 1
    );

    // Without a webhook URL there is nothing to match on.
    let mut blind = request(ProviderKind::BytePlus);
    blind.webhook_url = None;
    assert!(s
        .get(ProviderKind::BytePlus)
        .find_submitted(&blind, since)
        .await
        .is_err());
}
