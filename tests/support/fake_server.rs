//! A scriptable fake OpenAI / Anthropic HTTP/1.1 server for integration tests (std only).
//!
//! ```ignore
//! #[path = "support/fake_server.rs"]   // or `mod support;` + tests/support/mod.rs
//! mod fake_server;                      //    containing `pub mod fake_server;`
//! use fake_server::{FakeServer, Reply};
//!
//! let srv = FakeServer::start();                 // 127.0.0.1:<random port>
//! srv.push(Reply::openai_text("hello"));         // FIFO script: request #1 gets this
//! srv.push(Reply::openai_stream(&["Hel", "lo"]).chunk_delay(Duration::from_millis(5)));
//! srv.push(Reply::status_error(429, "slow down").header("retry-after", "1"));
//! srv.set_default(Reply::anthropic_text("fallback")); // once the script is empty
//! // ... point the client at srv.url() and run it ...
//! assert!(srv.wait_for_requests(3, Duration::from_secs(5)));
//! let reqs = srv.requests();
//! assert_eq!(reqs[0].header("content-type"), Some("application/json"));
//! assert_eq!(srv.connections_accepted(), 1);  // keep-alive reuse
//! ```
//!
//! Behaviour:
//! * HTTP/1.1 keep-alive: each connection gets its own thread that serves requests until the
//!   client closes (or sends `Connection: close`). Request bodies may use Content-Length or
//!   `Transfer-Encoding: chunked`; `Expect: 100-continue` is answered with `100 Continue`.
//! * Every request is recorded *before* its reply is chosen and sent.
//! * Non-streamed replies use Content-Length. SSE replies (`openai_stream*`, `anthropic_stream`,
//!   `sse`) use `text/event-stream` + `Transfer-Encoding: chunked`, one HTTP chunk per event (or
//!   per `split_writes` piece), ended by the zero-length chunk, so the connection stays reusable.
//! * Failure modifiers count "events": for SSE replies an event is one entry of the stream
//!   (for `openai_stream` event 0 is the `role` chunk, then one per piece, then the finish chunk,
//!   the usage chunk and `[DONE]`); a non-streamed body counts as a single event, so e.g.
//!   `Reply::openai_text(..).truncate_after_events(0)` sends headers and then closes the
//!   connection with a short body. After reset/truncate/stall/close_without_response the
//!   connection is closed (those replies also carry `Connection: close`).
//!   Note: libcurl transparently retries a request once when a *reused* connection closes
//!   before any response byte arrives (`close_without_response` on the 2nd+ request of a
//!   connection), so that request is recorded twice and consumes two scripted replies.
//! * Dropping the server stops accepting, shuts down every open connection (which unblocks
//!   stalled replies, delays and blocked writes) and joins all threads.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------
// Recorded requests
// ------------------------------------------------------------------------------------------

/// One request as received by the server.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target as sent, including any query string, e.g. "/v1/chat/completions".
    pub path: String,
    /// Header names are lowercased; values are trimmed. Order is preserved.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The body as (lossy) UTF-8 text, usually JSON.
    pub fn json(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ------------------------------------------------------------------------------------------
// Replies
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    Reset,
    Truncate,
    Stall,
}

/// A scripted response. Build with a constructor, then chain modifiers.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    content_type: String,
    headers: Vec<(String, String)>,
    /// Body pieces ("events"). Shared so cloning a 10 MB default reply is cheap.
    events: Arc<Vec<Vec<u8>>>,
    /// true = SSE, chunked transfer encoding; false = Content-Length.
    streamed: bool,
    delay: Duration,
    chunk_delay: Duration,
    split: usize,
    failure: Option<(usize, Failure)>,
    close_without_response: bool,
}

impl Reply {
    fn new(status: u16, content_type: &str, events: Vec<Vec<u8>>, streamed: bool) -> Reply {
        Reply {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            events: Arc::new(events),
            streamed,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            split: 0,
            failure: None,
            close_without_response: false,
        }
    }

    /// A Content-Length response with `content-type: application/json`.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::raw_body(status, "application/json", body.as_bytes().to_vec())
    }

    /// A Content-Length response with any content type.
    pub fn raw_body(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply::new(status, content_type, vec![body], false)
    }

    /// A complete OpenAI `chat.completion` with usage {11, words(text), 11 + words(text)}.
    pub fn openai_text(text: &str) -> Reply {
        let n = text.split_whitespace().count();
        let mut s = String::with_capacity(text.len() + 400);
        s.push_str(r#"{"id":"chatcmpl-fake","object":"chat.completion","created":1,"model":"fake","choices":[{"index":0,"message":{"role":"assistant","content":"#);
        push_json_str(&mut s, text);
        s.push_str(r#"},"finish_reason":"stop"}],"#);
        s.push_str(&openai_usage(n));
        s.push('}');
        Reply::json(200, &s)
    }

    /// An OpenAI `chat.completion` whose message carries one function tool call
    /// (`finish_reason: "tool_calls"`, usage completion_tokens = 5).
    pub fn openai_tool_call(id: &str, name: &str, arguments_json: &str) -> Reply {
        let body = format!(
            r#"{{"id":"chatcmpl-fake","object":"chat.completion","created":1,"model":"fake","choices":[{{"index":0,"message":{{"role":"assistant","content":null,"tool_calls":[{{"id":{},"type":"function","function":{{"name":{},"arguments":{}}}}}]}},"finish_reason":"tool_calls"}}],{}}}"#,
            json_str(id),
            json_str(name),
            json_str(arguments_json),
            openai_usage(5)
        );
        Reply::json(200, &body)
    }

    /// OpenAI SSE stream: role chunk, one `delta.content` chunk per piece, a finish chunk
    /// (`finish_reason: "stop"`), a usage chunk (`choices: []`, completion_tokens = pieces.len()),
    /// then `data: [DONE]`.
    pub fn openai_stream(pieces: &[&str]) -> Reply {
        let mut ev = vec![openai_chunk(r#"{"role":"assistant","content":""}"#, "null")];
        for p in pieces {
            ev.push(openai_chunk(
                &format!(r#"{{"content":{}}}"#, json_str(p)),
                "null",
            ));
        }
        Reply::openai_stream_tail(ev, "stop", pieces.len())
    }

    /// OpenAI SSE stream of one streamed tool call: the first delta has index 0, id,
    /// type "function", function.name and arguments ""; then one chunk per argument piece;
    /// finish_reason "tool_calls"; usage chunk; `[DONE]`.
    pub fn openai_stream_tool_call(id: &str, name: &str, argument_pieces: &[&str]) -> Reply {
        let first = format!(
            r#"{{"role":"assistant","content":null,"tool_calls":[{{"index":0,"id":{},"type":"function","function":{{"name":{},"arguments":""}}}}]}}"#,
            json_str(id),
            json_str(name)
        );
        let mut ev = vec![openai_chunk(&first, "null")];
        for p in argument_pieces {
            let d = format!(
                r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}}"#,
                json_str(p)
            );
            ev.push(openai_chunk(&d, "null"));
        }
        Reply::openai_stream_tail(ev, "tool_calls", argument_pieces.len())
    }

    fn openai_stream_tail(mut ev: Vec<String>, finish: &str, k: usize) -> Reply {
        ev.push(openai_chunk("{}", &json_str(finish)));
        ev.push(format!(
            "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake\",\"choices\":[],{}}}\n\n",
            openai_usage(k)
        ));
        ev.push("data: [DONE]\n\n".to_string());
        Reply::sse(ev)
    }

    /// An Anthropic Messages API response with one text block (stop_reason "end_turn").
    pub fn anthropic_text(text: &str) -> Reply {
        let n = text.split_whitespace().count();
        let content = format!(r#"[{{"type":"text","text":{}}}]"#, json_str(text));
        Reply::json(200, &anthropic_message(&content, "end_turn", n))
    }

    /// An Anthropic Messages API response with one `tool_use` block (stop_reason "tool_use",
    /// output_tokens = 5). `input_json` is embedded verbatim, so it must be a JSON object.
    pub fn anthropic_tool_use(id: &str, name: &str, input_json: &str) -> Reply {
        let content = format!(
            r#"[{{"type":"tool_use","id":{},"name":{},"input":{}}}]"#,
            json_str(id),
            json_str(name),
            input_json
        );
        Reply::json(200, &anthropic_message(&content, "tool_use", 5))
    }

    /// Anthropic SSE stream: message_start, content_block_start, one text_delta per piece,
    /// content_block_stop, message_delta (end_turn, output_tokens = pieces.len()), message_stop.
    pub fn anthropic_stream(pieces: &[&str]) -> Reply {
        let deltas: Vec<String> = pieces
            .iter()
            .map(|p| format!(r#"{{"type":"text_delta","text":{}}}"#, json_str(p)))
            .collect();
        anthropic_stream_of(r#"{"type":"text","text":""}"#, deltas, "end_turn")
    }

    /// (Extra) Anthropic SSE stream of one tool_use block: content_block_start carries
    /// {"type":"tool_use","id","name","input":{}}, then one `input_json_delta` per piece,
    /// stop_reason "tool_use".
    pub fn anthropic_stream_tool_use(id: &str, name: &str, input_pieces: &[&str]) -> Reply {
        let block = format!(
            r#"{{"type":"tool_use","id":{},"name":{},"input":{{}}}}"#,
            json_str(id),
            json_str(name)
        );
        let deltas: Vec<String> = input_pieces
            .iter()
            .map(|p| {
                format!(
                    r#"{{"type":"input_json_delta","partial_json":{}}}"#,
                    json_str(p)
                )
            })
            .collect();
        anthropic_stream_of(&block, deltas, "tool_use")
    }

    /// Raw SSE: each string is written as-is as one event / HTTP chunk
    /// (the caller includes the "data: ...\n\n" framing).
    pub fn sse(events: Vec<String>) -> Reply {
        let ev = events.into_iter().map(String::into_bytes).collect();
        Reply::new(200, "text/event-stream", ev, true)
    }

    /// OpenAI-style error: {"error":{"message":..,"type":..,"param":null,"code":..}}.
    /// type/code: 401 invalid_request_error/"invalid_api_key", 429 requests/"rate_limit_exceeded",
    /// other 4xx invalid_request_error/null, everything else server_error/null.
    pub fn status_error(status: u16, message: &str) -> Reply {
        let (ty, code) = match status {
            401 => ("invalid_request_error", "\"invalid_api_key\""),
            429 => ("requests", "\"rate_limit_exceeded\""),
            400..=499 => ("invalid_request_error", "null"),
            _ => ("server_error", "null"),
        };
        let body = format!(
            r#"{{"error":{{"message":{},"type":"{}","param":null,"code":{}}}}}"#,
            json_str(message),
            ty,
            code
        );
        Reply::json(status, &body)
    }

    /// The reply used while nothing is scripted.
    fn no_script() -> Reply {
        Reply::json(
            500,
            r#"{"error":{"message":"fake server: no scripted reply","type":"server_error"}}"#,
        )
    }

    // ---- modifiers ----

    /// Add a response header (e.g. "retry-after", "x-ratelimit-remaining-tokens").
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Wait this long before sending the status line.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    /// Wait this long between events (and between `split_writes` pieces).
    pub fn chunk_delay(mut self, d: Duration) -> Reply {
        self.chunk_delay = d;
        self
    }
    /// Write the body in `n`-byte pieces (each its own HTTP chunk for SSE), ignoring event
    /// boundaries. Combine with `chunk_delay` to force the client to see separate reads.
    pub fn split_writes(mut self, n: usize) -> Reply {
        self.split = n;
        self
    }
    /// Send `n` events, then abort the connection with a TCP RST.
    pub fn reset_after_events(mut self, n: usize) -> Reply {
        self.failure = Some((n, Failure::Reset));
        self
    }
    /// Send `n` events, then end the response (terminating chunk for SSE) and close.
    pub fn truncate_after_events(mut self, n: usize) -> Reply {
        self.failure = Some((n, Failure::Truncate));
        self
    }
    /// Send `n` events, then send nothing until the server is dropped or the client hangs up.
    pub fn stall_after_events(mut self, n: usize) -> Reply {
        self.failure = Some((n, Failure::Stall));
        self
    }
    /// Read the request, then close the connection without sending a single byte.
    pub fn close_without_response(mut self) -> Reply {
        self.close_without_response = true;
        self
    }
}

// ------------------------------------------------------------------------------------------
// JSON helpers
// ------------------------------------------------------------------------------------------

/// Append `s` as a quoted JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

fn openai_usage(k: usize) -> String {
    format!(
        r#""usage":{{"prompt_tokens":11,"completion_tokens":{},"total_tokens":{}}}"#,
        k,
        11 + k
    )
}

fn openai_chunk(delta: &str, finish_reason: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{},\"finish_reason\":{}}}]}}\n\n",
        delta, finish_reason
    )
}

fn anthropic_message(content: &str, stop_reason: &str, out_tokens: usize) -> String {
    format!(
        r#"{{"id":"msg_fake","type":"message","role":"assistant","content":{},"model":"fake","stop_reason":"{}","stop_sequence":null,"usage":{{"input_tokens":11,"output_tokens":{},"cache_read_input_tokens":3,"cache_creation_input_tokens":0}}}}"#,
        content, stop_reason, out_tokens
    )
}

fn anthropic_stream_of(block: &str, deltas: Vec<String>, stop_reason: &str) -> Reply {
    let ev = |name: &str, data: &str| format!("event: {}\ndata: {}\n\n", name, data);
    let k = deltas.len();
    let mut v = vec![
        ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_fake","type":"message","role":"assistant","content":[],"model":"fake","stop_reason":null,"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":3,"cache_creation_input_tokens":0}}}"#,
        ),
        ev(
            "content_block_start",
            &format!(
                r#"{{"type":"content_block_start","index":0,"content_block":{}}}"#,
                block
            ),
        ),
    ];
    for d in deltas {
        v.push(ev(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{}}}"#,
                d
            ),
        ));
    }
    v.push(ev(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ));
    v.push(ev("message_delta", &format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#, stop_reason, k)));
    v.push(ev("message_stop", r#"{"type":"message_stop"}"#));
    Reply::sse(v)
}

// ------------------------------------------------------------------------------------------
// Server
// ------------------------------------------------------------------------------------------

struct State {
    script: VecDeque<Reply>,
    default: Reply,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    shutdown: AtomicBool,
    connections: AtomicUsize,
    /// Clones of every open connection, so Drop can shut them down.
    open: Mutex<HashMap<u64, TcpStream>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// Lock ignoring poison: a panicking test thread must not break the server for everyone else.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        relock(&self.state)
    }
    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
    /// Sleep `d`, waking early (returning false) if the server is shutting down.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            thread::sleep((end - now).min(Duration::from_millis(10)));
        }
        false
    }
}

/// The fake server. Dropping it shuts everything down.
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Bind 127.0.0.1:0 and start the accept thread.
    pub fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake server: bind");
        let addr = listener.local_addr().expect("fake server: local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: VecDeque::new(),
                default: Reply::no_script(),
                requests: Vec::new(),
            }),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            handles: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name("fake-server-accept".into())
            .spawn(move || accept_loop(listener, sh))
            .expect("fake server: spawn");
        FakeServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// "http://127.0.0.1:PORT" (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// Append a reply to the FIFO script; each request consumes the next one.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().script.push_back(reply);
    }
    /// Reply used when the script is empty.
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }
    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }
    /// (Extra) The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().requests.last().cloned()
    }
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }
    /// Number of TCP connections accepted (1 for N requests proves keep-alive reuse).
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
    /// Wait until at least `n` requests have been recorded; false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.requests.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throwaway connection, then join the acceptor.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        // Unblock every connection thread (reads return EOF, writes fail), then join them.
        for s in relock(&self.shared.open).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let handles = std::mem::take(&mut *relock(&self.shared.handles));
        for h in handles {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    for conn in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        // Register before spawning so Drop (which joins this thread first) always sees it.
        if let Ok(clone) = stream.try_clone() {
            relock(&shared.open).insert(id, clone);
        }
        let sh = shared.clone();
        let h = thread::Builder::new()
            .name(format!("fake-server-conn-{}", id))
            .spawn(move || {
                serve_connection(&sh, stream);
                // Drop our registered clone so the socket really closes (needed for RST).
                relock(&sh.open).remove(&id);
            });
        if let Ok(h) = h {
            relock(&shared.handles).push(h);
        }
    }
}

/// Serve requests on one connection until it closes, errors, or a reply ends it.
fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let mut reader = match stream.try_clone() {
        Ok(s) => BufReader::with_capacity(64 * 1024, s),
        Err(_) => return,
    };
    while !shared.stopping() {
        let (req, client_wants_close) = match read_request(&mut reader, &mut stream) {
            Ok(Some(r)) => r,
            _ => return, // EOF, error or garbage: drop the connection
        };
        let reply = {
            let mut st = shared.lock();
            st.requests.push(req);
            shared.changed.notify_all();
            let next = st.script.pop_front();
            next.unwrap_or_else(|| st.default.clone())
        };
        match write_reply(shared, &mut stream, &reply) {
            Ok(true) if !client_wants_close => continue,
            _ => return,
        }
    }
}

/// Read one request. Ok(None) = clean EOF before a request line. The bool is "close after".
fn read_request(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
) -> io::Result<Option<(RecordedRequest, bool)>> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break; // tolerate stray CRLFs between requests
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v)) => (m.to_string(), p.to_string(), v.to_string()),
        _ => return Err(bad("bad request line")),
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if get("expect").is_some_and(|v| v == "100-continue") {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size_str = line.trim().split(';').next().unwrap_or("");
            let size =
                usize::from_str_radix(size_str.trim(), 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Skip trailers up to the blank line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.trim().parse().map_err(|_| bad("bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    let conn = get("connection").unwrap_or_default();
    let close = conn.contains("close") || (version == "HTTP/1.0" && !conn.contains("keep-alive"));
    Ok(Some((
        RecordedRequest {
            method,
            path,
            headers,
            body,
        },
        close,
    )))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Write one reply. Ok(true) = the connection may be reused.
fn write_reply(shared: &Shared, s: &mut TcpStream, reply: &Reply) -> io::Result<bool> {
    if reply.close_without_response {
        let _ = s.shutdown(Shutdown::Both);
        return Ok(false);
    }
    if !shared.sleep(reply.delay) {
        return Ok(false);
    }
    let total: usize = reply.events.iter().map(Vec::len).sum();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type
    );
    if reply.streamed {
        head.push_str("cache-control: no-cache\r\ntransfer-encoding: chunked\r\n");
    } else {
        head.push_str(&format!("content-length: {}\r\n", total));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{}: {}\r\n", k, v));
    }
    if reply.failure.is_some() {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;

    // The events actually sent, then how they are cut into writes.
    let n_send = reply
        .failure
        .map_or(reply.events.len(), |(n, _)| n.min(reply.events.len()));
    let sent = &reply.events[..n_send];
    let joined;
    let pieces: Vec<&[u8]> = if reply.split > 0 {
        joined = sent.concat();
        joined.chunks(reply.split).collect()
    } else {
        sent.iter().map(|e| e.as_slice()).collect()
    };
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 && !shared.sleep(reply.chunk_delay) {
            return Ok(false);
        }
        if reply.streamed {
            if p.is_empty() {
                continue; // a zero-length chunk would end the body
            }
            let mut buf = Vec::with_capacity(p.len() + 16);
            buf.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            buf.extend_from_slice(p);
            buf.extend_from_slice(b"\r\n");
            s.write_all(&buf)?;
        } else {
            s.write_all(p)?;
        }
        s.flush()?;
    }
    match reply.failure {
        None => {
            if reply.streamed {
                s.write_all(b"0\r\n\r\n")?;
            }
            Ok(true)
        }
        Some((_, Failure::Truncate)) => {
            if reply.streamed {
                s.write_all(b"0\r\n\r\n")?;
            }
            let _ = s.shutdown(Shutdown::Write);
            Ok(false)
        }
        Some((_, Failure::Reset)) => {
            set_linger_zero(s); // the final close() now sends RST instead of FIN
            Ok(false)
        }
        Some((_, Failure::Stall)) => {
            stall(shared, s);
            Ok(false)
        }
    }
}

/// Keep the connection open, sending nothing, until shutdown or the client hangs up.
fn stall(shared: &Shared, s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 4096];
    while !shared.stopping() {
        match s.read(&mut buf) {
            Ok(0) => return, // client closed (or Drop shut the socket down)
            Ok(_) => {}      // ignore anything the client sends
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// SO_LINGER {on, 0}: closing the socket aborts it with RST. std has no stable API for it
/// (TcpStream::set_linger is unstable), so call setsockopt directly.
#[cfg(unix)]
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    extern "C" {
        fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            value: *const std::ffi::c_void,
            len: u32,
        ) -> i32;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SOL_SOCKET_SO_LINGER: (i32, i32) = (1, 13);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SOL_SOCKET_SO_LINGER: (i32, i32) = (0xffff, 0x0080); // macOS and the BSDs
    let l = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `s`; pointer/length describe a live `struct linger`.
    unsafe {
        setsockopt(
            s.as_raw_fd(),
            SOL_SOCKET_SO_LINGER.0,
            SOL_SOCKET_SO_LINGER.1,
            &l as *const Linger as *const std::ffi::c_void,
            std::mem::size_of::<Linger>() as u32,
        );
    }
}

#[cfg(not(unix))]
fn set_linger_zero(_s: &TcpStream) {}

/// Reason phrase for the status line (clients ignore it, so keep this short).
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        429 => "Too Many Requests",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        _ => "Status",
    }
}
