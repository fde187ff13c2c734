//! A minimal session pooler for the fleet store: short-lived commands reuse warm server sessions.
//!
//! Each `checkpoint` is its own process, and a new server connection costs the server a fork,
//! its startup and planning on cold catalog caches: most of a checkpoint's server time. The pool
//! listens on a unix socket named as the server's own (`<dir>/.s.PGSQL.5432`, so a client given
//! `host=<dir>` finds it), answers each client's startup itself, and hands it a warm backend
//! connection to the real server for the length of its session (session pooling: one client,
//! one backend, no statement is ever interleaved with another client's). When the client leaves
//! with its backend idle, `DISCARD ALL` resets the session (session advisory locks, prepared
//! statements, settings) and the backend waits for the next client; a backend left in a
//! transaction, mid-statement or failing is closed instead.
//!
//! The protocol (version 3.0) is the server's own reference:
//! <https://www.postgresql.org/docs/15/protocol-flow.html> (start-up, SSL and GSSAPI encryption
//! requests answered `N`, cancelling, simple and extended query with one ReadyForQuery per Query
//! or Sync, termination) and <https://www.postgresql.org/docs/15/protocol-message-formats.html>
//! (every message is a type byte and an Int32 length counting itself but not the type byte; the
//! startup packet and its SSLRequest 80877103, GSSENCRequest 80877104 and CancelRequest 80877102
//! codes have no type byte; AuthenticationOk is `R` with 0, cleartext 3, MD5 5 plus a 4-byte
//! salt, SASL 10/11/12). Messages to the server and the MD5 and SCRAM-SHA-256 exchanges are
//! those of the `postgres-protocol` crate, the one the `postgres` client uses. No TLS, like the
//! rest of the store.

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use postgres::Config;
use postgres::config::Host;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Target;

/// The socket file's name in the pool's directory: what libpq and the `postgres` crate derive
/// from `host=<dir>` and port 5432.
pub const SOCKET_FILE: &str = ".s.PGSQL.5432";
/// The port a client gives with the pool's directory as its host.
pub const SOCKET_PORT: u16 = 5432;
/// At most this many warm backends wait for a client; more are closed when their client leaves.
const IDLE_CAP: usize = 32;
/// A unix socket path is at most 107 bytes (`sun_path` is 108 with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// How often the accept loop looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// Longer startup packets are refused (the server's own limit is 10000 bytes).
const MAX_STARTUP: usize = 10_000;

/// The socket path of a pool in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

/// The directory named by `ORCHESTRATOR_POOL` when a pool's socket is there.
pub fn from_env() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("ORCHESTRATOR_POOL")?);
    let is_socket = std::fs::metadata(socket_path(&dir)).is_ok_and(|m| m.file_type().is_socket());
    is_socket.then_some(dir)
}

/// Whether a pool answers on the socket in `dir`.
pub fn is_live(dir: &Path) -> bool {
    UnixStream::connect(socket_path(dir)).is_ok()
}

/// A bound pool: its socket exists and clients queue on it until [`Pool::serve`] runs.
pub struct Pool {
    listener: UnixListener,
    socket: PathBuf,
    /// The socket file's identity, so that a pool removes only its own file.
    inode: (u64, u64),
    upstream: Arc<Upstream>,
    stop: Arc<AtomicBool>,
}

/// Stops a pool serving on its own thread, and removes its socket, when dropped.
pub struct PoolHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl PoolHandle {
    /// The directory clients name in `ORCHESTRATOR_POOL`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds a pool for `target` in `socket_dir` and serves it on a thread of its own until the
/// handle is dropped (what `run` hosts for its agents).
pub fn spawn(target: &Target, socket_dir: &Path) -> Result<PoolHandle> {
    let pool = Pool::bind(target, socket_dir)?;
    let stop = pool.stopper();
    let thread = std::thread::Builder::new()
        .name("fleet-pool".into())
        .spawn(move || {
            if let Err(err) = pool.serve() {
                tracing::warn!("the fleet store's pool stopped: {err:#}");
            }
        })
        .context("cannot start the pool's thread")?;
    Ok(PoolHandle {
        stop,
        thread: Some(thread),
        dir: socket_dir.to_path_buf(),
    })
}

impl Pool {
    /// Listens on `socket_dir/.s.PGSQL.5432` (the directory made, mode 0700, if missing). A
    /// live pool already there is refused; a socket file left by a killed one is replaced.
    pub fn bind(target: &Target, socket_dir: &Path) -> Result<Pool> {
        let upstream = Upstream::of(target)?;
        let socket = socket_path(socket_dir);
        let length = socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            bail!(
                "{}: a unix socket path is at most {MAX_SOCKET_PATH} bytes, this one is {length}",
                socket.display()
            );
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(socket_dir)
            .with_context(|| format!("cannot create {}", socket_dir.display()))?;
        if let Ok(meta) = std::fs::symlink_metadata(&socket) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{}: exists and is not a socket; remove it or choose another directory",
                    socket.display()
                );
            }
            match UnixStream::connect(&socket) {
                Ok(_) => bail!(
                    "{}: another pool already listens there (stop it, or choose another directory)",
                    socket.display()
                ),
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::debug!("removing the stale socket {}", socket.display());
                    std::fs::remove_file(&socket)
                        .with_context(|| format!("cannot remove {}", socket.display()))?;
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot check {}", socket.display()));
                }
            }
        }
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let meta = std::fs::metadata(&socket)
            .with_context(|| format!("cannot read {}", socket.display()))?;
        Ok(Pool {
            listener,
            socket,
            inode: (meta.dev(), meta.ino()),
            upstream: Arc::new(upstream),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The flag that stops [`Pool::serve`] (within a fraction of a second) once set.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Accepts clients, each served on a thread of its own, until the stop flag is set; then
    /// removes the socket. Clients already served finish their sessions.
    pub fn serve(self) -> Result<()> {
        let fd = self.listener.as_raw_fd();
        while !self.stop.load(Ordering::Relaxed) {
            let mut fds = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd, its count given.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, STOP_CHECK.as_millis() as i32) };
            if ready <= 0 {
                // A timeout, or a signal (EINTR): look at the stop flag again.
                continue;
            }
            let client = match self.listener.accept() {
                Ok((client, _)) => client,
                Err(err) => {
                    tracing::warn!("the pool cannot accept a client: {err}");
                    continue;
                }
            };
            let upstream = Arc::clone(&self.upstream);
            let spawned = std::thread::Builder::new()
                .name("fleet-pool-client".into())
                .spawn(move || serve_client(&upstream, client));
            if let Err(err) = spawned {
                tracing::warn!("the pool cannot start a client's thread: {err}");
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.socket)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// The real server, and the warm connections to it that wait for a client.
struct Upstream {
    hosts: Vec<(Host, u16)>,
    user: String,
    password: Option<Vec<u8>>,
    database: String,
    options: String,
    timeout: Duration,
    display: String,
    idle: Mutex<Vec<Backend>>,
}

impl Upstream {
    fn of(target: &Target) -> Result<Upstream> {
        let config = Config::from_str(&target.url)
            .with_context(|| format!("{}: not a valid URL", target.source))?;
        let user = match config.get_user() {
            Some(user) => user.to_string(),
            None => os_user_name()?,
        };
        let ports = config.get_ports();
        let hosts: Vec<(Host, u16)> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = match ports {
                    [] => 5432,
                    [one] => *one,
                    many => many.get(i).copied().unwrap_or(5432),
                };
                (host.clone(), port)
            })
            .collect();
        if hosts.is_empty() {
            bail!(
                "{}: the URL {} names no host",
                target.source,
                target.display()
            );
        }
        let statement_ms = target.timeout.as_millis();
        let options = match config.get_options() {
            Some(options) => format!("{options} -c statement_timeout={statement_ms}"),
            None => format!("-c statement_timeout={statement_ms}"),
        };
        Ok(Upstream {
            hosts,
            database: config.get_dbname().unwrap_or(&user).to_string(),
            user,
            password: config.get_password().map(<[u8]>::to_vec),
            options,
            timeout: config
                .get_connect_timeout()
                .copied()
                .unwrap_or(target.timeout),
            display: target.display(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A warm idle backend that is still there, else a new one.
    fn checkout(&self) -> Result<Backend> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(backend) = next else { break };
            if backend.is_quiet() {
                tracing::debug!("reusing backend {}", backend.pid);
                return Ok(backend);
            }
            tracing::debug!("backend {} went away while idle", backend.pid);
        }
        self.connect()
    }

    fn checkin(&self, backend: Backend) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CAP {
            idle.push(backend);
        }
    }

    fn connect(&self) -> Result<Backend> {
        let mut last = None;
        for (host, port) in &self.hosts {
            match self.connect_to(host, *port) {
                Ok(backend) => return Ok(backend),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no host")))
    }

    fn connect_to(&self, host: &Host, port: u16) -> Result<Backend> {
        let stream = match host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let stream = UnixStream::connect(&path)
                    .with_context(|| format!("cannot connect to {}", path.display()))?;
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                Stream::Unix(stream)
            }
            Host::Tcp(name) => {
                let addrs: Vec<_> = (name.as_str(), port)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {name}"))?
                    .collect();
                let mut connected = None;
                let mut last = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, self.timeout) {
                        Ok(stream) => {
                            connected = Some(stream);
                            break;
                        }
                        Err(err) => last = Some(err),
                    }
                }
                let stream = match (connected, last) {
                    (Some(stream), _) => stream,
                    (None, Some(err)) => {
                        return Err(err)
                            .with_context(|| format!("cannot connect to {name}:{port}"));
                    }
                    (None, None) => bail!("{name} resolves to no address"),
                };
                stream.set_nodelay(true)?;
                keep_alive(stream.as_raw_fd());
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                Stream::Tcp(stream)
            }
        };
        let mut backend = Backend {
            stream,
            parameters: Vec::new(),
            key_data: Vec::new(),
            pid: 0,
        };
        self.start_up(&mut backend)
            .with_context(|| format!("the fleet store {}", self.display))?;
        backend.stream.set_timeouts(None)?;
        tracing::debug!("new backend {}", backend.pid);
        Ok(backend)
    }

    /// The startup packet and authentication, up to the server's first ReadyForQuery.
    fn start_up(&self, backend: &mut Backend) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("client_encoding", "UTF8"),
                ("user", self.user.as_str()),
                ("database", self.database.as_str()),
                ("options", self.options.as_str()),
                ("application_name", "orchestrator"),
            ],
            &mut out,
        )?;
        backend.stream.write_all(&out)?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = read_frame(&mut backend.stream)?;
            let mut bytes = BytesMut::from(&frame[..]);
            let message = Message::parse(&mut bytes)?.context("a short message")?;
            out.clear();
            match message {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(self.password()?, &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(self.user.as_bytes(), self.password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(_) => {
                    // The body is the list of mechanisms, each a C string, then an empty one.
                    let offered = cstrings(&frame[9..]);
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        bail!("the server offers no SASL mechanism known here: {offered:?}");
                    }
                    let exchange =
                        ScramSha256::new(self.password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, exchange.message(), &mut out)?;
                    scram = Some(exchange);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let exchange = scram.as_mut().context("SASL continued without a start")?;
                    exchange.update(body.data())?;
                    frontend::sasl_response(exchange.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let exchange = scram.as_mut().context("SASL ended without a start")?;
                    exchange.finish(body.data())?;
                }
                Message::ParameterStatus(_) => backend.set_parameter(frame),
                Message::BackendKeyData(body) => {
                    backend.pid = body.process_id();
                    backend.key_data = frame;
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(_) => bail!("{}", error_text(&frame[5..])),
                Message::NoticeResponse(_) => {}
                _ => bail!(
                    "unexpected message `{}` while starting up",
                    char::from(frame[0])
                ),
            }
            if !out.is_empty() {
                backend.stream.write_all(&out)?;
            }
        }
    }

    fn password(&self) -> Result<&[u8]> {
        self.password.as_deref().ok_or_else(|| {
            anyhow!(
                "the server asks for a password and the URL {} has none",
                self.display
            )
        })
    }
}

/// One connection to the real server, authenticated and idle between clients.
struct Backend {
    stream: Stream,
    /// The ParameterStatus messages the server sent, whole, the latest of each name.
    parameters: Vec<Vec<u8>>,
    /// The BackendKeyData message, whole.
    key_data: Vec<u8>,
    pid: i32,
}

impl Backend {
    fn set_parameter(&mut self, frame: Vec<u8>) {
        let name = |f: &[u8]| cstrings(&f[5..]).into_iter().next();
        let new = name(&frame);
        self.parameters.retain(|old| name(old) != new);
        self.parameters.push(frame);
    }

    /// Idle, a backend says nothing: readable means closed or a FATAL message on its way.
    fn is_quiet(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, its count given; timeout 0 never blocks.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        ready == 0
    }

    /// `DISCARD ALL`, read to its ReadyForQuery: the session as a new one, or an error.
    fn reset(&mut self, timeout: Duration) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query("DISCARD ALL", &mut out)?;
        self.stream.set_timeouts(Some(timeout))?;
        self.stream.write_all(&out)?;
        loop {
            let frame = read_frame(&mut self.stream)?;
            match frame[0] {
                b'E' => bail!("{}", error_text(&frame[5..])),
                b'S' => self.set_parameter(frame),
                b'Z' => {
                    if frame.get(5) != Some(&b'I') {
                        bail!("not idle after DISCARD ALL");
                    }
                    break;
                }
                _ => {}
            }
        }
        self.stream.set_timeouts(None)?;
        Ok(())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Terminate: the server ends the session at once instead of on a broken socket.
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

/// Keepalives on a TCP backend, as `PgStore::connect` asks for its own: a server host that
/// vanished is noticed instead of waited on forever.
fn keep_alive(fd: RawFd) {
    let set = |level, name, value: libc::c_int| {
        // SAFETY: a valid fd and a pointer to an int of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30);
}

/// One message: its type byte, its Int32 length and its body, read whole.
fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 5];
    stream.read_exact(&mut frame)?;
    let length = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
    if !(4..=1 << 30).contains(&length) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of length {length}"),
        ));
    }
    frame.resize(1 + length as usize, 0);
    stream.read_exact(&mut frame[5..])?;
    Ok(frame)
}

/// The C strings at the start of `body`, up to an empty one or the end.
fn cstrings(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == 0)
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// An ErrorResponse body as one line: its message and SQLSTATE.
fn error_text(body: &[u8]) -> String {
    let mut message = String::new();
    let mut code = String::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'M' => message = value,
            b'C' => code = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    format!("{message} ({code})")
}

/// A FATAL ErrorResponse with `code` (SQLSTATE) and `message`.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(kind);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// What a client's first packet asked for.
#[derive(Debug, PartialEq)]
enum Startup {
    /// Protocol 3.0 with these parameters.
    Session(Vec<(String, String)>),
    Cancel,
}

/// Reads the startup packet, answering `N` to requests for SSL or GSSAPI encryption.
fn read_startup(client: &mut (impl Read + Write)) -> Result<Startup> {
    loop {
        let mut length = [0u8; 4];
        client.read_exact(&mut length)?;
        let length = i32::from_be_bytes(length);
        if !(8..=MAX_STARTUP as i32).contains(&length) {
            bail!("a startup packet of length {length}");
        }
        let mut packet = vec![0u8; length as usize - 4];
        client.read_exact(&mut packet)?;
        let code = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => client.write_all(b"N")?,
            CANCEL_REQUEST => return Ok(Startup::Cancel),
            PROTOCOL_3_0 => {
                let strings = cstrings(&packet[4..]);
                let pairs = strings
                    .chunks(2)
                    .filter(|pair| pair.len() == 2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect();
                return Ok(Startup::Session(pairs));
            }
            other => bail!(
                "protocol {}.{} is not served (3.0 is)",
                other >> 16,
                other & 0xffff
            ),
        }
    }
}

/// The uid of the process at the other end of a unix socket.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid fd, and a ucred buffer of the length given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn os_user_name() -> Result<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once, one thread
    // of ours at this point (binding happens before serving).
    unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if entry.is_null() || (*entry).pw_name.is_null() {
            bail!("the URL names no user and this process's user has no name");
        }
        Ok(std::ffi::CStr::from_ptr((*entry).pw_name)
            .to_string_lossy()
            .into_owned())
    }
}

fn serve_client(upstream: &Upstream, mut client: UnixStream) {
    match admit(upstream, &mut client) {
        Ok(Some(backend)) => relay(upstream, client, backend),
        Ok(None) => {}
        Err(err) => tracing::debug!("a client of the pool left before its session: {err:#}"),
    }
}

/// The client's startup answered with a backend's own, or `None` (a refusal was sent).
fn admit(upstream: &Upstream, client: &mut UnixStream) -> Result<Option<Backend>> {
    client.set_read_timeout(Some(upstream.timeout))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = unsafe { libc::geteuid() };
    let uid = peer_uid(client)?;
    if uid != ours {
        client.write_all(&error_response(
            "28000",
            &format!("the pool serves only uid {ours}, not {uid}"),
        ))?;
        return Ok(None);
    }
    let params = match read_startup(client)? {
        Startup::Cancel => {
            tracing::debug!("a cancel request to the pool: not forwarded");
            return Ok(None);
        }
        Startup::Session(params) => params,
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let user = get("user").unwrap_or_default();
    let database = get("database").unwrap_or(user);
    if user != upstream.user || database != upstream.database {
        client.write_all(&error_response(
            "28000",
            &format!(
                "this pool serves database `{}` as user `{}` only ({})",
                upstream.database, upstream.user, upstream.display
            ),
        ))?;
        return Ok(None);
    }
    let backend = match upstream.checkout() {
        Ok(backend) => backend,
        Err(err) => {
            tracing::warn!("the pool cannot reach the server: {err:#}");
            client.write_all(&error_response(
                "08006",
                &format!("the pool cannot reach the server: {err:#}"),
            ))?;
            return Ok(None);
        }
    };
    let mut hello = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    for parameter in &backend.parameters {
        hello.extend_from_slice(parameter);
    }
    hello.extend_from_slice(&backend.key_data);
    hello.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    client.set_read_timeout(None)?;
    client.write_all(&hello)?;
    tracing::debug!("client served by backend {}", backend.pid);
    Ok(Some(backend))
}

/// Why a relay ended.
enum Ended {
    /// The client sent Terminate or closed its end: the backend may be kept.
    ClientLeft,
    /// The backend closed or failed, or the client's socket did: close the backend.
    Broken,
}

/// Carries messages both ways until the client leaves; then resets the backend and keeps it if
/// its session ended idle, or closes it.
fn relay(upstream: &Upstream, mut client: UnixStream, mut backend: Backend) {
    let mut from_client = Scanner::new(b"X");
    let mut from_server = Scanner::new(&[]);
    // Each Query, Sync or FunctionCall the server has yet to answer with ReadyForQuery.
    let mut outstanding: usize = 0;
    let mut status = b'I';
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    let ended = 'relay: loop {
        let mut fds = [
            libc::pollfd {
                fd: client.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: backend.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds, their count given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Ended::Broken;
        }
        if fds[0].revents != 0 {
            let n = match client.read(&mut buf) {
                Ok(0) => break Ended::ClientLeft,
                Ok(n) => n,
                Err(_) => break Ended::ClientLeft,
            };
            out.clear();
            let frames = match from_client.feed(&buf[..n], &mut out) {
                Ok(frames) => frames,
                Err(_) => break Ended::Broken,
            };
            let mut terminated = false;
            for frame in frames {
                match frame.tag {
                    b'Q' | b'S' | b'F' => outstanding += 1,
                    b'X' => terminated = true,
                    _ => {}
                }
            }
            if backend.stream.write_all(&out).is_err() {
                break Ended::Broken;
            }
            if terminated {
                break Ended::ClientLeft;
            }
        }
        if fds[1].revents != 0 {
            let n = match backend.stream.read(&mut buf) {
                Ok(0) | Err(_) => break Ended::Broken,
                Ok(n) => n,
            };
            out.clear();
            let frames = match from_server.feed(&buf[..n], &mut out) {
                Ok(frames) => frames,
                Err(_) => break Ended::Broken,
            };
            for frame in frames {
                if frame.tag == b'Z' {
                    outstanding = outstanding.saturating_sub(1);
                    status = frame.first.unwrap_or(b'?');
                }
            }
            if client.write_all(&out).is_err() {
                break 'relay Ended::Broken;
            }
        }
    };
    let idle = matches!(ended, Ended::ClientLeft)
        && outstanding == 0
        && status == b'I'
        && from_client.between_frames()
        && from_server.between_frames();
    if !idle {
        tracing::debug!(
            "closing backend {}: its client left it busy (status {}, {outstanding} answers due)",
            backend.pid,
            char::from(status)
        );
        return;
    }
    match backend.reset(upstream.timeout) {
        Ok(()) => upstream.checkin(backend),
        Err(err) => tracing::warn!("closing backend {}: {err:#}", backend.pid),
    }
}

/// A message the scanner saw whole: its type byte, and its body's first byte if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    tag: u8,
    first: Option<u8>,
}

/// Finds message boundaries in a byte stream that arrives in arbitrary pieces, passing the
/// bytes on as they come except the messages of the types it is told to drop.
struct Scanner {
    drop: &'static [u8],
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
    first: Option<u8>,
    dropping: bool,
}

impl Scanner {
    fn new(drop: &'static [u8]) -> Scanner {
        Scanner {
            drop,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            first: None,
            dropping: false,
        }
    }

    /// Whether the stream so far ends at a message boundary.
    fn between_frames(&self) -> bool {
        self.header_len == 0
    }

    /// Appends to `out` what to pass on of `input`; returns the messages completed in it.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<Vec<Frame>> {
        let mut done = Vec::new();
        while !input.is_empty() {
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&input[..take]);
                self.header_len += take;
                input = &input[take..];
                if self.header_len < 5 {
                    break;
                }
                let h = self.header;
                let length = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
                if length < 4 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a message of length {length}"),
                    ));
                }
                self.body_left = length as usize - 4;
                self.first = None;
                self.dropping = self.drop.contains(&h[0]);
                if !self.dropping {
                    out.extend_from_slice(&h);
                }
            }
            let take = self.body_left.min(input.len());
            if take > 0 {
                if self.first.is_none() {
                    self.first = Some(input[0]);
                }
                if !self.dropping {
                    out.extend_from_slice(&input[..take]);
                }
                self.body_left -= take;
                input = &input[take..];
            }
            if self.body_left == 0 {
                done.push(Frame {
                    tag: self.header[0],
                    first: self.first,
                });
                self.header_len = 0;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn messages_split_anywhere_come_out_whole_and_terminate_is_dropped() {
        // Parse, Bind, Execute, Sync, then Terminate: what the postgres crate sends last.
        let mut stream = message(b'Q', b"SELECT 1\0");
        stream.extend(message(b'S', b""));
        stream.extend(message(b'X', b""));
        let kept_len = stream.len() - 5;
        for piece in 1..=stream.len() {
            let mut scanner = Scanner::new(b"X");
            let mut out = Vec::new();
            let mut frames = Vec::new();
            for chunk in stream.chunks(piece) {
                frames.extend(scanner.feed(chunk, &mut out).unwrap());
            }
            let tags: Vec<u8> = frames.iter().map(|f| f.tag).collect();
            assert_eq!(tags, b"QSX", "pieces of {piece}");
            assert_eq!(out, stream[..kept_len], "pieces of {piece}");
            assert!(scanner.between_frames());
        }
    }

    #[test]
    fn ready_for_query_gives_its_status_and_a_partial_message_is_seen() {
        let mut scanner = Scanner::new(&[]);
        let mut out = Vec::new();
        let mut stream = message(b'C', b"SELECT 1\0");
        stream.extend(message(b'Z', b"T"));
        let frames = scanner.feed(&stream, &mut out).unwrap();
        assert_eq!(
            frames,
            [
                Frame {
                    tag: b'C',
                    first: Some(b'S')
                },
                Frame {
                    tag: b'Z',
                    first: Some(b'T')
                }
            ]
        );
        assert_eq!(out, stream);
        let next = message(b'D', b"\0\0");
        assert!(scanner.feed(&next[..3], &mut out).unwrap().is_empty());
        assert!(!scanner.between_frames());
    }

    #[test]
    fn a_length_below_four_is_refused() {
        let mut scanner = Scanner::new(&[]);
        let err = scanner
            .feed(&[b'Z', 0, 0, 0, 3], &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn startup_answers_encryption_requests_with_n_then_reads_the_parameters() {
        let mut input = Vec::new();
        input.extend_from_slice(&8i32.to_be_bytes());
        input.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        let mut startup = BytesMut::new();
        frontend::startup_message([("user", "fleet"), ("database", "queue")], &mut startup)
            .unwrap();
        input.extend_from_slice(&startup);
        let mut conversation = Conversation {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        let got = read_startup(&mut conversation).unwrap();
        assert_eq!(
            got,
            Startup::Session(vec![
                ("user".into(), "fleet".into()),
                ("database".into(), "queue".into())
            ])
        );
        assert_eq!(conversation.output, b"N");

        let mut cancel = Vec::new();
        cancel.extend_from_slice(&16i32.to_be_bytes());
        cancel.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        cancel.extend_from_slice(&[0; 8]);
        let mut conversation = Conversation {
            input: io::Cursor::new(cancel),
            output: Vec::new(),
        };
        assert_eq!(read_startup(&mut conversation).unwrap(), Startup::Cancel);
    }

    #[test]
    fn an_error_response_reads_back_as_its_message_and_code() {
        let frame = error_response("08006", "gone");
        assert_eq!(frame[0], b'E');
        assert_eq!(
            i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - 1
        );
        assert_eq!(error_text(&frame[5..]), "gone (08006)");
    }

    struct Conversation {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Conversation {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Conversation {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
