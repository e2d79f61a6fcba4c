use super::*;

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

#[test]
fn a_disconnect_ends_only_that_user_s_connections() {
    let registry = Arc::new(Registry::default());
    let (a, a_stop, ab_stop) = (
        user("a"),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    let (a_reg, _a_commands) = registry.register(&a, Some(1), a_stop.clone());
    let (_ab_reg, _ab_commands) = registry.register(&user("a.b"), Some(1), ab_stop.clone());
    registry.apply(Control::Disconnect { revocation: None }, &a);
    assert!(a_stop.is_cancelled() && a_reg.is_revoked());
    assert!(!ab_stop.is_cancelled());
}

#[test]
fn a_revocation_is_kept_at_its_latest_and_refuses_new_registrations() {
    let registry = Arc::new(Registry::default());
    let a = user("a");
    let later = Revocation {
        revoked_before: unix_now(),
        expires: unix_now() + 60,
    };
    registry.revoke(a.clone(), Some(later));
    registry.keep(
        &a,
        Revocation {
            revoked_before: 1,
            ..later
        },
    );
    assert!(registry.is_revoked(&a, Some(later.revoked_before - 1)));
    assert!(!registry.is_revoked(&a, Some(later.revoked_before)));
    let stop = CancellationToken::new();
    let (_registration, _commands) = registry.register(&a, None, stop.clone());
    assert!(stop.is_cancelled(), "a token without iat is revoked");
    registry.revoke(a.clone(), None);
    assert!(!registry.is_revoked(&a, None));
}

#[test]
fn a_registration_leaves_on_drop() {
    let registry = Arc::new(Registry::default());
    let (registration, _commands) = registry.register(&user("a"), None, CancellationToken::new());
    drop(registration);
    assert!(registry.users.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unsubscribes_reach_the_connection_in_order_up_to_the_queue_bound() {
    let registry = Arc::new(Registry::default());
    let alice = user("alice");
    let (_registration, mut commands) = registry.register(&alice, None, CancellationToken::new());
    // On this one-thread runtime the task runs only once the test awaits:
    // every unsubscribe below is queued (or dropped) while it waits.
    let waiting = tokio::spawn(async move {
        let first = commands.recv().await;
        (first, commands)
    });
    tokio::task::yield_now().await;
    let ns = |i: usize| Namespace::parse(format!("ns{i}")).unwrap();
    for i in 0..COMMAND_QUEUE + 2 {
        registry.unsubscribe(&alice, &ns(i));
    }
    let (first, commands) = waiting.await.unwrap();
    let taken = |command: Option<Command>| command.map(|Command::Unsubscribe(ns)| ns);
    assert_eq!(taken(first), Some(ns(0)), "a waiting connection is woken");
    for i in 1..COMMAND_QUEUE {
        assert_eq!(taken(commands.try_recv()), Some(ns(i)), "in order");
    }
    assert_eq!(taken(commands.try_recv()), None, "past the bound, dropped");
}
