//! A private RabbitMQ node: it answers on its own port, dies with kill -9,
//! comes back on the same port and data, and leaves nothing behind.

use infinity_local::RabbitServer;

#[test]
fn node_restarts_on_same_port_and_data() {
    let server = RabbitServer::start().expect("a private RabbitMQ node starts");
    let url = server.url();
    let dir = server.dir();
    assert!(url.starts_with("amqp://guest:guest@127.0.0.1:"), "{url}");
    assert!(server.handshake().is_ok());
    let first_pid = server.pid().expect("the node wrote its pid file");
    assert!(dir.join("mnesia").is_dir());

    server.kill().unwrap();
    assert!(server.handshake().is_err(), "the node still answers");
    assert!(!std::path::Path::new(&format!("/proc/{first_pid}")).exists());

    server.restart().unwrap();
    assert!(server.handshake().is_ok());
    assert_eq!(server.url(), url);
    assert_ne!(server.pid(), Some(first_pid));

    let second_pid = server.pid().unwrap();
    drop(server);
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(!std::path::Path::new(&format!("/proc/{second_pid}")).exists());
}
