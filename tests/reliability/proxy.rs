//! A small TCP proxy for network faults, between portcullis and PostgreSQL, on loopback only.
//!
//! Every accepted connection gets a thread that connects to the upstream server and two pumps
//! (one per direction). What the proxy does with the bytes is switched at any time:
//!
//! - [`Proxy::stall`]: a black hole. Connections stay open and new ones are accepted (the
//!   kernel completes the handshake and even ACKs data, so TCP keepalives are answered), but
//!   nothing is forwarded either way: what a hung proxy, a hung server or a broken middlebox
//!   looks like to a client.
//! - [`Proxy::stall_open`]: the same for the connections open now only; new ones are forwarded:
//!   one connection that hangs while the server stays reachable.
//! - [`Proxy::cut`]: every open connection is closed at once (both sides).
//! - [`Proxy::refuse`]: new connections are accepted and closed at once.
//! - [`Proxy::resume`]: forward again (stalled bytes then flow).
//! - [`Proxy::rewrite`]: replace a byte string with another of the same length in what the
//!   client sends (so every message keeps its length), to make a real server refuse a statement
//!   portcullis sends, as a server built for another system would. Only for plaintext
//!   connections (`sslmode=disable`); [`Proxy::rewritten`] counts the replacements, so a test
//!   can tell that its rewrite happened.
//!
//! Bounded: pumps poll with short read timeouts and check a stop flag, so dropping the proxy
//! closes every socket and joins every thread within a fraction of a second.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const FORWARD: u8 = 0;
const STALL: u8 = 1;
const REFUSE: u8 = 2;

/// How often pumps and the acceptor look at the mode and the stop flag.
const TICK: Duration = Duration::from_millis(10);

struct Shared {
    mode: AtomicU8,
    /// Connections numbered up to this (by `accepted`) are stalled whatever the mode.
    stalled_upto: AtomicUsize,
    stop: AtomicBool,
    /// Bumped by `cut`: a pump whose connection is older than this closes it.
    generation: AtomicU64,
    /// Clones of every socket, to shut them down from outside (a pump may sit in `write`).
    sockets: Mutex<Vec<(u64, TcpStream)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicUsize,
    forwarded: AtomicU64,
    /// (what, with what) pairs applied to the client's bytes.
    rewrites: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    rewritten: AtomicUsize,
}

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:<free port>` in front of `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on loopback");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(FORWARD),
            stalled_upto: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            forwarded: AtomicU64::new(0),
            rewrites: Mutex::new(Vec::new()),
            rewritten: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(listener, upstream, s))
            .unwrap();
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop forwarding, keep every connection open, keep accepting.
    pub fn stall(&self) {
        self.shared.mode.store(STALL, Ordering::SeqCst);
    }

    /// Stall the connections open now, as [`Proxy::stall`] does; forward new ones.
    pub fn stall_open(&self) {
        let open = self.shared.accepted.load(Ordering::SeqCst);
        self.shared.stalled_upto.store(open, Ordering::SeqCst);
    }

    /// Forward again.
    pub fn resume(&self) {
        self.shared.mode.store(FORWARD, Ordering::SeqCst);
    }

    /// Close new connections at once (existing ones are left alone).
    pub fn refuse(&self) {
        self.shared.mode.store(REFUSE, Ordering::SeqCst);
    }

    /// Close every open connection now; new ones are handled by the current mode.
    pub fn cut(&self) {
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let sockets = self.shared.sockets.lock().unwrap();
        for (g, s) in sockets.iter() {
            if *g < generation {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// From now on, replace every `what` the client sends by `with` (the same length). A
    /// `what` split across two reads is missed, which [`Proxy::rewritten`] would show; the
    /// short statements this is for arrive whole on loopback.
    pub fn rewrite(&self, what: &str, with: &str) {
        assert_eq!(what.len(), with.len(), "a rewrite keeps the length");
        assert!(!what.is_empty());
        let pair = (what.as_bytes().to_vec(), with.as_bytes().to_vec());
        self.shared.rewrites.lock().unwrap().push(pair);
    }

    /// Replacements made so far.
    pub fn rewritten(&self) -> usize {
        self.shared.rewritten.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far (both directions).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, s) in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let number = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                if shared.mode.load(Ordering::SeqCst) == REFUSE {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let s = Arc::clone(&shared);
                let handle = std::thread::spawn(move || serve(client, upstream, s, number));
                shared.threads.lock().unwrap().push(handle);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>, number: usize) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let generation = shared.generation.load(Ordering::SeqCst);
    {
        let mut sockets = shared.sockets.lock().unwrap();
        sockets.push((generation, client.try_clone().unwrap()));
        sockets.push((generation, server.try_clone().unwrap()));
    }
    let up = {
        let (from, to, s) = (
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            Arc::clone(&shared),
        );
        std::thread::spawn(move || pump(from, to, generation, number, true, s))
    };
    pump(
        server,
        client,
        generation,
        number,
        false,
        Arc::clone(&shared),
    );
    let _ = up.join();
}

/// Copies `from` to `to` while the mode is FORWARD; holds still while STALL, or once
/// `stall_open` caught connection `number` open; ends on EOF, an error, a cut or the stop flag,
/// closing both sockets. `from_client` applies the rewrites.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    generation: u64,
    number: usize,
    from_client: bool,
    shared: Arc<Shared>,
) {
    let stalled = |shared: &Shared| {
        shared.mode.load(Ordering::SeqCst) == STALL
            || number <= shared.stalled_upto.load(Ordering::SeqCst)
    };
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst)
            || shared.generation.load(Ordering::SeqCst) > generation
        {
            break;
        }
        if stalled(&shared) {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // A stall that begins while bytes are in hand holds them back too.
                while stalled(&shared)
                    && !shared.stop.load(Ordering::SeqCst)
                    && shared.generation.load(Ordering::SeqCst) <= generation
                {
                    std::thread::sleep(TICK);
                }
                if from_client {
                    rewrite(&mut buf[..n], &shared);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                shared.forwarded.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Applies the rewrites to `bytes` in place, counting each replacement.
fn rewrite(bytes: &mut [u8], shared: &Shared) {
    for (what, with) in shared.rewrites.lock().unwrap().iter() {
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(what.len()).position(|w| w == &what[..]) {
            bytes[at + i..at + i + what.len()].copy_from_slice(with);
            shared.rewritten.fetch_add(1, Ordering::SeqCst);
            at += i + what.len();
        }
    }
}

#[test]
fn the_proxy_forwards_stalls_and_cuts() {
    // An echo server stands in for PostgreSQL.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // One connection: the refused one never reaches upstream.
        for conn in echo.incoming().take(1).flatten() {
            std::thread::spawn(move || {
                let mut c = conn;
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(echo_port);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 5];
    c.write_all(b"hello").unwrap();
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    proxy.rewrite("ell", "ELL");
    c.write_all(b"hello, hello").unwrap();
    let mut twice = [0u8; 12];
    c.read_exact(&mut twice).unwrap();
    assert_eq!(
        &twice, b"hELLo, hELLo",
        "rewritten once each, on the way up"
    );
    assert_eq!(proxy.rewritten(), 2);
    proxy.stall();
    c.write_all(b"again").unwrap();
    assert!(
        c.read_exact(&mut buf).is_err(),
        "nothing comes back while stalled"
    );
    proxy.resume();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again", "stalled bytes flow after resume");
    proxy.cut();
    let mut rest = Vec::new();
    assert!(
        matches!(c.read_to_end(&mut rest), Ok(0) | Err(_)),
        "cut closes it"
    );
    proxy.refuse();
    let mut d = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(d.read(&mut buf), Ok(0) | Err(_)), "refused");
    assert!(proxy.accepted() >= 2 && proxy.forwarded() >= 20);
}
