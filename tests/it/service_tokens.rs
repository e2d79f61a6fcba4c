//! The publisher's cache of verified service tokens never outlives the key
//! that signed them: a key the identity provider removes is refused at the
//! refresh that drops it, even for a token accepted (and cached) just before.

use herald_tests::{
    apps::{TestPublisher, publisher_config},
    clients::{calendar_event, post_event, service_claims},
    jwks::{JwksServer, TestKey, until_dropped},
    nats::NatsServer,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_service_token_is_refused_once_its_key_leaves_the_jwks() {
    let provider = JwksServer::start(&[(TestKey::Ec, "a"), (TestKey::Rsa, "b")]).await;
    provider.cache_control(Some("public, max-age=1"));
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.keys = provider.keys();
    let keys = config.keys.clone();
    let publisher = TestPublisher::spawn_with(config).await;
    let url = publisher.url();
    let token_a = TestKey::Ec.sign("a", &service_claims());
    let token_b = TestKey::Rsa.sign("b", &service_claims());

    for id in ["e1", "e2"] {
        let answer = post_event(&url, &token_a, &calendar_event(id, &["u_1"], &[])).await;
        assert_eq!(answer.status, 202, "{id}: {:?}", answer.body);
    }

    provider.serve_keys(&[(TestKey::Rsa, "b")]);
    until_dropped(&keys, "a").await;

    let refused = post_event(&url, &token_a, &calendar_event("e3", &["u_1"], &[])).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "INVALID_TOKEN");
    let accepted = post_event(&url, &token_b, &calendar_event("e4", &["u_1"], &[])).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
}
