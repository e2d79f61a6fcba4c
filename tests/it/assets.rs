//! What the edge serves besides sockets: the browser client always, the live
//! calendar demo and its `/dev/*` helpers only in dev mode; and the
//! publisher's CORS, also dev mode only.

use herald_shared::frames::ServerFrame;
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, TestPublisher, edge_config, publisher_config},
    clients::{WsClient, calendar_event, post_event},
    nats::NatsServer,
};
use reqwest::{Method, Response, header};
use serde_json::Value;

/// A publisher and one edge, both in dev mode or neither.
async fn stack(dev_mode: bool) -> Stack {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.dev_mode = dev_mode;
    let publisher = TestPublisher::spawn_with(config).await;
    let mut config = edge_config(&nats, "edge-a");
    config.dev_mode = dev_mode;
    config.dev_publisher_url = publisher.url();
    let edge = TestEdge::spawn_with(config).await;
    Stack {
        publisher,
        edges: vec![edge],
        nats,
    }
}

fn edge_url(stack: &Stack, path: &str) -> String {
    format!("http://{}{path}", stack.edge().addr)
}

async fn send(request: reqwest::RequestBuilder) -> Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("an answer in time")
        .expect("a response")
}

async fn get(url: &str) -> Response {
    send(reqwest::Client::new().get(url)).await
}

fn header_of(response: &Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .map_or("", |v| v.to_str().unwrap())
}

/// `OPTIONS /v1/events` as a browser sends it before a cross-origin POST.
async fn preflight(stack: &Stack) -> Response {
    let request = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/v1/events", stack.publisher.url()),
        )
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        );
    send(request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_client_is_served_as_javascript_without_dev_mode() {
    let stack = stack(false).await;

    let client = get(&edge_url(&stack, "/herald.js")).await;
    assert_eq!(client.status(), 200);
    assert_eq!(
        header_of(&client, header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header_of(&client, header::CACHE_CONTROL), "no-cache");
    let source = client.text().await.unwrap();
    assert!(
        source.contains("export class Herald"),
        "not the client: {source:.200}"
    );

    let types = get(&edge_url(&stack, "/herald.d.ts")).await;
    assert_eq!(types.status(), 200);
    assert!(header_of(&types, header::CONTENT_TYPE).starts_with("application/typescript"));
    assert_eq!(header_of(&types, header::CACHE_CONTROL), "no-cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_and_dev_routes_do_not_exist_without_dev_mode() {
    let stack = stack(false).await;

    for path in [
        "/demo",
        "/demo.js",
        "/demo.css",
        "/dev/config",
        "/dev/token?user=u1&ns=team-*",
    ] {
        assert_eq!(get(&edge_url(&stack, path)).await.status(), 404, "{path}");
    }
    let answer = preflight(&stack).await;
    assert!(!answer.status().is_success(), "{}", answer.status());
    assert_eq!(header_of(&answer, header::ACCESS_CONTROL_ALLOW_ORIGIN), "");
    let refused = post_event(&stack.publisher.url(), "not-a-token", &Value::Null).await;
    assert_eq!(refused.status, 401);
    assert!(
        !refused
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_serves_the_demo_and_tokens_the_edge_and_publisher_accept() {
    let stack = stack(true).await;

    let page = get(&edge_url(&stack, "/demo")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        header_of(&page, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"id="connection""#), "{html:.200}");
    for (path, content_type) in [("/demo.js", "text/javascript"), ("/demo.css", "text/css")] {
        let asset = get(&edge_url(&stack, path)).await;
        assert_eq!(asset.status(), 200, "{path}");
        assert!(header_of(&asset, header::CONTENT_TYPE).starts_with(content_type));
    }

    let config: Value = get(&edge_url(&stack, "/dev/config"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["publisher_url"], stack.publisher.url());

    let minted = get(&edge_url(&stack, "/dev/token?user=u1&ns=team-*")).await;
    assert_eq!(minted.status(), 200);
    assert_eq!(header_of(&minted, header::CACHE_CONTROL), "no-store");
    let minted: Value = minted.json().await.unwrap();
    let token = minted["token"].as_str().expect("a user token");
    let service_token = minted["service_token"].as_str().expect("a service token");

    // The edge takes the user token, with the namespace its grant allows...
    let url = stack.edge().ws_url(&format!("token={token}&ns=team-42"));
    let (mut client, welcome) = WsClient::connect_welcomed(&url).await;
    let ServerFrame::Welcome { user, channels, .. } = welcome else {
        unreachable!()
    };
    assert_eq!(user.as_str(), "u1");
    let channels: Vec<String> = channels.iter().map(ToString::to_string).collect();
    assert_eq!(channels, ["user:u1", "ns:team-42"]);

    // ...and the publisher the service token; the event comes back on the socket.
    let event = calendar_event("dev-token-1", &[], &["team-42"]);
    let answer = post_event(&stack.publisher.url(), service_token, &event).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let ServerFrame::Event { channel, id, .. } = client.next_event().await else {
        unreachable!()
    };
    assert_eq!(
        (channel.to_string().as_str(), id.as_str()),
        ("ns:team-42", "dev-token-1")
    );

    let no_user = get(&edge_url(&stack, "/dev/token?ns=team-*")).await;
    assert_eq!(no_user.status(), 400);
    let body: Value = no_user.json().await.unwrap();
    assert_eq!(body["code"], "VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_answers_cors_in_dev_mode() {
    let stack = stack(true).await;

    let answer = preflight(&stack).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(header_of(&answer, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert!(header_of(&answer, header::ACCESS_CONTROL_ALLOW_METHODS).contains("POST"));
    let allowed = header_of(&answer, header::ACCESS_CONTROL_ALLOW_HEADERS);
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );

    // Errors carry the headers too, or the page could not read why.
    let refused = post_event(&stack.publisher.url(), "not-a-token", &Value::Null).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}
