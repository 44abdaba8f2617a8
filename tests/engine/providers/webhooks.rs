//! Providers, webhooks: callbacks reach the URL with the generation id, and each dialect
//! signs (or does not sign) them as the real vendor does.

use super::*;

#[tokio::test]
async fn webhooks_reach_the_callback_url_with_the_generation_id() {
    let s = setup().await;
    let (sink, seen) = webhook_sink().await;
    let mut ids = Vec::new();
    for kind in ProviderKind::ALL {
        let mut req = request(kind);
        req.webhook_url = Some(format!("{sink}/webhooks/{kind}"));
        let submitted = s.get(kind).submit(&req).await.unwrap();
        ids.push((kind, req.generation_id, submitted.request_id));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "webhooks did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    for (kind, generation_id, request_id) in ids {
        let (uri, headers, body) = seen
            .iter()
            .find(|(uri, _, _)| uri.starts_with(&format!("/webhooks/{kind}?")))
            .unwrap_or_else(|| panic!("no {kind} webhook in {seen:?}"));
        assert!(
            uri.contains(&format!("generation_id={generation_id}")),
            "{uri}"
        );
        match kind {
            ProviderKind::Fal => {
                assert_eq!(body["request_id"], request_id.as_str());
                assert_eq!(body["status"], "OK");
                assert!(body["payload"]["video"]["url"].is_string());
            }
            ProviderKind::BytePlus => {
                assert_eq!(body["id"], request_id.as_str());
                assert_eq!(body["status"], "succeeded");
            }
            ProviderKind::Replicate => {
                assert_eq!(body["id"], request_id.as_str());
                assert_eq!(body["status"], "succeeded");
                assert!(headers.contains_key("webhook-id"));
            }
        }
    }
    assert_eq!(s.stats().await.webhooks_sent, 3);
}

#[tokio::test]
async fn fal_webhooks_are_signed_with_a_key_of_the_jwks_and_keys_rotate() {
    let s = setup().await;
    let (sink, seen) = raw_webhook_sink().await;
    let id = s.submit_to(ProviderKind::Fal, &sink).await;
    let first = hooks(&seen, 1).await.remove(0);
    assert!(first.uri.starts_with("/webhooks/fal?"), "{}", first.uri);
    assert_eq!(first.json()["request_id"], id.as_str());
    assert_eq!(first.header("x-fal-webhook-request-id"), id);
    assert_eq!(
        first.header("x-fal-webhook-user-id"),
        fake::DEFAULT_FAL_USER_ID
    );
    assert!(timestamp_age(&first, "x-fal-webhook-timestamp").abs() <= 5);
    assert_eq!(first.header("x-fal-webhook-signature").len(), 128);

    let (status, jwks) = s.get_json("/fal/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    let old_kid = fal_verifying_kid(&jwks, &first).expect("the signature verifies");
    // A byte more in the body and it no longer does.
    let mut tampered = first.clone();
    tampered.body = bytes::Bytes::from([&first.body[..], b" "].concat());
    assert_eq!(fal_verifying_kid(&jwks, &tampered), None);

    // Rotation: the JWKS lists old and new, and the next webhook verifies with the new.
    let rotated = s.control("/_fake/fal-keys/rotate", json!({})).await;
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let (_, jwks) = s.get_json("/fal/.well-known/jwks.json").await;
    let kids: HashSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, HashSet::from([old_kid.as_str(), new_kid.as_str()]));
    s.replay(&id, 1).await;
    let replayed = hooks(&seen, 2).await.remove(1);
    assert_eq!(replayed.body, first.body, "a replay is the same webhook");
    assert_eq!(fal_verifying_kid(&jwks, &replayed), Some(new_kid.clone()));

    // Unknown-key mode: the next webhook is signed by a key no JWKS lists.
    s.control("/_fake/fal-keys/unknown", json!({})).await;
    s.replay(&id, 2).await;
    let got = hooks(&seen, 4).await;
    assert_eq!(fal_verifying_kid(&jwks, &got[2]), None);
    assert_eq!(fal_verifying_kid(&jwks, &got[3]), Some(new_kid));

    // The JWKS endpoint can be made to fail like any other.
    s.fault(json!({"provider": "fal", "op": "jwks", "fault": "http_status", "status": 503}))
        .await;
    assert_eq!(s.get_json("/fal/.well-known/jwks.json").await.0, 503);
    assert_eq!(s.get_json("/fal/.well-known/jwks.json").await.0, 200);
    let stats = s.stats().await;
    assert_eq!(stats.ops(ProviderKind::Fal, FakeOp::Jwks), 4);
    assert_eq!(stats.webhooks_sent, 4);
}

#[tokio::test]
async fn fal_webhooks_carry_the_configured_user_id() {
    let s = setup_with(
        FakeConfig {
            fal_user_id: "user-42".into(),
            ..render(Duration::from_millis(200))
        },
        Duration::from_secs(2),
    )
    .await;
    let (sink, seen) = raw_webhook_sink().await;
    s.submit_to(ProviderKind::Fal, &sink).await;
    let hook = hooks(&seen, 1).await.remove(0);
    assert_eq!(hook.header("x-fal-webhook-user-id"), "user-42");
    assert!(fal_verifying_kid(&s.fake.fal_jwks(), &hook).is_some());
}

#[tokio::test]
async fn replicate_webhooks_are_signed_with_the_served_secret() {
    let s = setup().await;
    let (sink, seen) = raw_webhook_sink().await;
    let id = s.submit_to(ProviderKind::Replicate, &sink).await;
    let first = hooks(&seen, 1).await.remove(0);
    assert_eq!(first.json()["id"], id.as_str());
    assert!(first.header("webhook-id").starts_with("msg_"));
    assert!(timestamp_age(&first, "webhook-timestamp").abs() <= 5);

    let (status, secret) = s.get_json("/replicate/v1/webhooks/default/secret").await;
    assert_eq!(status, 200);
    let secret = secret["key"].as_str().unwrap().to_string();
    assert_eq!(secret, fake::DEFAULT_REPLICATE_WEBHOOK_SECRET);
    assert!(first.header("webhook-signature").starts_with("v1,"));
    assert!(!first.header("webhook-signature").contains(' '));
    assert!(replicate_verifies(&secret, &first));
    assert!(!replicate_verifies(
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        &first
    ));

    // A stale timestamp for the next delivery, signed as such; duplicates keep the id.
    s.control("/_fake/webhooks/stale", json!({"seconds": 600}))
        .await;
    s.replay(&id, 2).await;
    let got = hooks(&seen, 3).await;
    let (stale, fresh) = (&got[1], &got[2]);
    assert!((595..=610).contains(&timestamp_age(stale, "webhook-timestamp")));
    assert!(timestamp_age(fresh, "webhook-timestamp").abs() <= 5);
    for hook in [stale, fresh] {
        assert_eq!(hook.header("webhook-id"), first.header("webhook-id"));
        assert_eq!(hook.body, first.body);
        assert!(replicate_verifies(&secret, hook));
    }

    // Rotation: the endpoint serves the new secret; webhooks carry both signatures.
    let rotated = s.control("/_fake/replicate-secret/rotate", json!({})).await;
    let new_secret = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(rotated["previous"], secret.as_str());
    assert_ne!(new_secret, secret);
    assert!(new_secret.starts_with("whsec_"));
    let (_, served) = s.get_json("/replicate/v1/webhooks/default/secret").await;
    assert_eq!(served["key"], new_secret.as_str());
    s.replay(&id, 1).await;
    let during = hooks(&seen, 4).await.remove(3);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    assert!(replicate_verifies(&new_secret, &during));
    assert!(replicate_verifies(&secret, &during));
    assert_eq!(s.fake.replicate_webhook_secret(), new_secret);
}

#[tokio::test]
async fn byteplus_webhooks_are_unsigned_and_replays_need_a_finished_job() {
    let s = setup().await;
    let (sink, seen) = raw_webhook_sink().await;
    let id = s.submit_to(ProviderKind::BytePlus, &sink).await;
    // Even with a stale timestamp asked for: BytePlus sends none, and does not use it up.
    s.control("/_fake/webhooks/stale", json!({"seconds": 600, "times": 1}))
        .await;
    let hook = hooks(&seen, 1).await.remove(0);
    assert_eq!(hook.json()["id"], id.as_str());
    for name in hook.headers.keys() {
        let name = name.as_str();
        assert!(
            !name.starts_with("webhook-") && !name.starts_with("x-fal-"),
            "BytePlus signs nothing, yet {name}"
        );
    }
    s.replay(&id, 1).await;
    assert_eq!(hooks(&seen, 2).await[1].body, hook.body);

    // The stale timestamp is still there for the next signed delivery.
    s.submit_to(ProviderKind::Replicate, &sink).await;
    let replicate = hooks(&seen, 3).await.remove(2);
    assert!((595..=610).contains(&timestamp_age(&replicate, "webhook-timestamp")));

    let r = s
        .http
        .post(format!("{}/_fake/webhooks/replay", s.fake.url()))
        .json(&json!({"request_id": "no-such-job"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A job still running has no final webhook to replay yet.
    let slow = setup_slow().await;
    let running = slow.submit_to(ProviderKind::Replicate, &sink).await;
    let r = slow
        .http
        .post(format!("{}/_fake/webhooks/replay", slow.fake.url()))
        .json(&json!({"request_id": running}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}
