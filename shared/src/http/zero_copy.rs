//! Zero-copy file responses on HTTP/1 connections: a handler that answers with a region of a
//! local file says so with a [`FileRegion`] response extension, and the region's bytes go from
//! the page cache to the socket with `sendfile(2)`, never through this process's memory.
//!
//! hyper owns the socket and writes whatever body it is given, so the region has to travel
//! through hyper as a stand-in. The outermost layer ([`swap_body`]) replaces the response
//! body with chunks of [`STAND_IN`], a static block of zeros, as long as the region, and
//! records the file bytes each chunk stands for in the connection's queue at the moment
//! hyper takes the chunk. The connection's stream ([`ZeroCopyStream`]) recognises those
//! chunks by their address when hyper writes them and sends the recorded file bytes in their
//! place. This holds together because hyper writes the chunks it takes unchanged and in the
//! order it took them (its queued write strategy, which a stream that writes vectored gets),
//! one response after the other. Each chunk starts at a place of its own in the block, which
//! its record names: a stand-in that arrives without its record, or at another place, fails
//! the connection rather than send anything else.
//!
//! Only responses to HTTP/1 GETs are swapped, and only when no layer re-encoded the body.
//! The file is read where the socket is written, on the connection's task: as with nginx's
//! `sendfile on` (without its thread pool), a read that misses the page cache holds that
//! worker thread for the disk read, of at most [`MOST_PER_SEND`] bytes a call. Asking the
//! page cache first (`preadv2` with `RWF_NOWAIT`) and reading misses on the blocking pool
//! would avoid that; it is not done.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::request::Parts;
use axum::http::{Method, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The most bytes one stand-in chunk covers.
const CHUNK: usize = 1 << 20;
/// Stand-in chunks start at one of this many places, in turn, so that each names its own
/// record: a chunk and a record out of step are caught even when their lengths agree.
const PLACES: usize = 4096;
/// The most file bytes one `sendfile` call sends, so that a read that misses the page cache
/// holds the connection's worker thread for a bounded time.
const MOST_PER_SEND: usize = 256 << 10;

/// What stand-in chunks are cut from. A static has one address for the life of the process,
/// which is how the stream tells a stand-in from the bytes of any other body.
static STAND_IN: [u8; CHUNK + PLACES] = [0; CHUNK + PLACES];

/// A region of a local file that a response's body holds, byte for byte.
#[derive(Clone, Debug)]
pub struct FileRegion {
    /// The file, open for reading.
    pub file: Arc<File>,
    /// Where the region starts.
    pub offset: u64,
    /// Its length, which must be the response's `Content-Length`.
    pub len: u64,
}

/// The file bytes one stand-in chunk was taken for, as many as are not sent yet.
#[derive(Debug)]
struct Pending {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Where the chunk's next byte lies in [`STAND_IN`].
    at: usize,
}

/// The records of the stand-in chunks hyper took and has not written yet, in order.
#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Chunks taken so far, which picks each one's place.
    taken: usize,
}

/// A connection's queue of file bytes taken by hyper and not yet written, shared by its
/// stream and, as a request extension, by the requests it carries.
#[derive(Clone, Debug, Default)]
pub(crate) struct ZeroCopy(Arc<Mutex<Queue>>);

impl Connected<IncomingStream<'_, ZeroCopyListener>> for ZeroCopy {
    fn connect_info(stream: IncomingStream<'_, ZeroCopyListener>) -> Self {
        stream.io().queue.clone()
    }
}

impl ZeroCopy {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is left consistent at every step, so a panic elsewhere cannot spoil it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The connection's queue, when the response to the request may be sent with `sendfile`:
/// an HTTP/1 GET on a connection accepted by a [`ZeroCopyListener`].
fn queue_of(parts: &Parts) -> Option<ZeroCopy> {
    let http1 = matches!(parts.version, Version::HTTP_10 | Version::HTTP_11);
    if !cfg!(target_os = "linux") || parts.method != Method::GET || !http1 {
        return None;
    }
    let ConnectInfo(queue) = parts.extensions.get::<ConnectInfo<ZeroCopy>>()?;
    Some(queue.clone())
}

/// The outermost middleware: replaces the body of a response that carries a [`FileRegion`]
/// with its stand-in, when the connection can send it. Any other response passes unchanged.
pub(crate) async fn swap_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let queue = queue_of(&parts);
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let Some(region) = response.extensions_mut().remove::<FileRegion>() else {
        return response;
    };
    let Some(queue) = queue else {
        return response;
    };
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    // A layer that re-encoded the body, or a length that is not the region's, means the
    // body is no longer the region's bytes: it is sent as it is.
    if response.headers().contains_key(header::CONTENT_ENCODING) || length != Some(region.len) {
        return response;
    }
    *response.body_mut() = Body::new(StandIn { region, queue });
    response
}

/// A body of stand-in chunks, each recorded in the connection's queue as it is taken.
#[derive(Debug)]
struct StandIn {
    region: FileRegion,
    queue: ZeroCopy,
}

impl http_body::Body for StandIn {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let StandIn { region, queue } = &mut *self;
        if region.len == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(region.len).map_or(CHUNK, |left| left.min(CHUNK));
        let mut queue = queue.queue();
        let at = queue.taken % PLACES;
        queue.taken += 1;
        queue.pending.push_back(Pending {
            file: region.file.clone(),
            offset: region.offset,
            len,
            at,
        });
        region.offset += len as u64;
        region.len -= len as u64;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            &STAND_IN[at..at + len],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.region.len == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.region.len)
    }
}

/// Where `slice` lies in [`STAND_IN`], if it was cut from it.
fn stand_in_place(slice: &[u8]) -> Option<usize> {
    let start = STAND_IN.as_ptr() as usize;
    let at = (slice.as_ptr() as usize).checked_sub(start)?;
    (!slice.is_empty() && at + slice.len() <= STAND_IN.len()).then_some(at)
}

/// A TCP listener whose connections can send [`FileRegion`]s; serve it with
/// `into_make_service_with_connect_info::<ZeroCopy>()` and [`swap_body`] outermost.
#[derive(Debug)]
pub(crate) struct ZeroCopyListener(pub(crate) TcpListener);

impl Listener for ZeroCopyListener {
    type Io = ZeroCopyStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        // Without TCP_NODELAY a response whose head and body leave in two writes waits for
        // the client's delayed ACK (Nagle), some 40 ms per small object.
        let _ = tcp.set_nodelay(true);
        let stream = ZeroCopyStream {
            tcp,
            queue: ZeroCopy::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// An accepted connection: reads pass through; writes pass through except stand-in chunks,
/// whose file bytes are sent in their place.
#[derive(Debug)]
pub(crate) struct ZeroCopyStream {
    tcp: TcpStream,
    queue: ZeroCopy,
}

impl ZeroCopyStream {
    /// Sends the file bytes of the stand-in chunk at the head of the queue, whose unsent
    /// rest is `len` bytes at `at` in [`STAND_IN`], as many as the socket takes.
    fn poll_send_file(
        &self,
        cx: &mut Context<'_>,
        at: usize,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut queue = self.queue.queue();
            let Some(pending) = queue.pending.front_mut() else {
                return Poll::Ready(Err(io::Error::other(
                    "a stand-in chunk was written without its file region",
                )));
            };
            if pending.at != at || pending.len != len {
                return Poll::Ready(Err(io::Error::other(
                    "a stand-in chunk is out of step with its file region",
                )));
            }
            let mut offset = pending.offset;
            let most = len.min(MOST_PER_SEND);
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                sendfile(&self.tcp, &pending.file, &mut offset, most)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a file ended before its region",
                    )));
                }
                Ok(sent) => {
                    pending.offset += sent as u64;
                    pending.len -= sent;
                    pending.at += sent;
                    if pending.len == 0 {
                        queue.pending.pop_front();
                    }
                    return Poll::Ready(Ok(sent));
                }
                // The socket was full after all: wait until it is writable again.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => {
                    tracing::debug!(error = %err, "sending a file region failed");
                    return Poll::Ready(Err(err));
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn sendfile(socket: &TcpStream, file: &File, offset: &mut u64, len: usize) -> io::Result<usize> {
    match rustix::fs::sendfile(socket, file, Some(offset), len) {
        // A file system that cannot splice its pages: the bytes are read and written.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            use std::os::unix::fs::FileExt as _;
            let mut buf = vec![0; len.min(64 << 10)];
            let read = file.read_at(&mut buf, *offset)?;
            let sent = rustix::io::write(socket, &buf[..read])?;
            *offset += sent as u64;
            Ok(sent)
        }
        sent => Ok(sent?),
    }
}

/// Elsewhere no connection offers zero copy ([`queue_of`]), so no stand-in is ever taken.
#[cfg(not(target_os = "linux"))]
fn sendfile(_: &TcpStream, _: &File, _: &mut u64, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The result of a write that stopped early: what was written so far, if anything, else
/// the result itself.
fn so_far(written: usize, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    if written > 0 {
        Poll::Ready(Ok(written))
    } else {
        result
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut written = 0;
        let mut at = 0;
        while at < bufs.len() {
            if let Some(place) = stand_in_place(&bufs[at]) {
                let len = bufs[at].len();
                match self.poll_send_file(cx, place, len) {
                    Poll::Ready(Ok(sent)) if sent == len => written += sent,
                    Poll::Ready(Ok(sent)) => return Poll::Ready(Ok(written + sent)),
                    other => return so_far(written, other),
                }
                at += 1;
                continue;
            }
            // The ordinary slices up to the next stand-in go out in one vectored write.
            let end = bufs[at..]
                .iter()
                .position(|buf| stand_in_place(buf).is_some())
                .map_or(bufs.len(), |next| at + next);
            let want: usize = bufs[at..end].iter().map(|buf| buf.len()).sum();
            match Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[at..end]) {
                Poll::Ready(Ok(sent)) if sent == want => written += sent,
                Poll::Ready(Ok(sent)) => return Poll::Ready(Ok(written + sent)),
                other => return so_far(written, other),
            }
            at = end;
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::extract::Path;
    use axum::http::HeaderValue;
    use axum::middleware;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Bytes that show any shift, repeat or mix-up of a region.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Serves `/{offset}/{len}` as a region of `file`, with a stand-by body of `x`s of the
    /// same length: which of the two arrives tells whether the region was sent. With
    /// `encoded`, the response says it was re-encoded, so the region must not be sent.
    async fn start(file: Arc<File>, encoded: bool) -> SocketAddr {
        let serve_region = move |Path((offset, len)): Path<(u64, u64)>| {
            let file = file.clone();
            async move {
                let mut response = Response::new(Body::from(vec![b'x'; len as usize]));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                if encoded {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
                }
                response
                    .extensions_mut()
                    .insert(FileRegion { file, offset, len });
                response
            }
        };
        let app = Router::new()
            .route("/{offset}/{len}", get(serve_region))
            .layer(middleware::from_fn(swap_body));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<ZeroCopy>();
            axum::serve(ZeroCopyListener(listener), app).await
        });
        addr
    }

    /// Reads the next response off `stream` (what was read past the one before is in
    /// `buf`); returns its head and body. A HEAD's response has no body to read.
    async fn next_response(
        stream: &mut TcpStream,
        buf: &mut Vec<u8>,
        head: bool,
    ) -> (String, Vec<u8>) {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8(buf[..end].to_vec()).unwrap();
                let len: usize = text
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                let len = if head { 0 } else { len };
                while buf.len() < end + 4 + len {
                    assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed");
                }
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return (text, body);
            }
            assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed");
        }
    }

    fn request(method: &str, offset: usize, len: usize) -> String {
        format!("{method} /{offset}/{len} HTTP/1.1\r\nhost: test\r\n\r\n")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_regions_arrive_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes = pattern(3 * CHUNK + 5);
        std::fs::write(&path, &bytes).unwrap();
        let addr = start(Arc::new(File::open(&path).unwrap()), false).await;

        // Regions of one byte, of none, of a page, of several chunks, and ending off a chunk
        // boundary, all asked at once on one connection; the client reads nothing until the
        // server has filled the socket, so sends stop short and resume.
        let regions = [
            (0, 4096),
            (1, 1),
            (9, 0),
            (0, 3 * CHUNK + 5),
            (2 * CHUNK - 3, CHUNK + 8),
        ];
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let requests: String = regions
            .iter()
            .map(|&(offset, len)| request("GET", offset, len))
            .collect();
        stream.write_all(requests.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut buf = Vec::new();
        for (offset, len) in regions {
            let (head, body) = next_response(&mut stream, &mut buf, false).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body.len(), len);
            assert!(
                body == bytes[offset..offset + len],
                "region {offset}+{len} arrived changed"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heads_and_re_encoded_bodies_keep_their_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes = pattern(CHUNK + 1);
        std::fs::write(&path, &bytes).unwrap();
        let file = Arc::new(File::open(&path).unwrap());

        // A HEAD sends no region, and the GET after it on the same connection gets its own.
        let addr = start(file.clone(), false).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let requests = request("HEAD", 0, 10) + &request("GET", 5, CHUNK - 4);
        stream.write_all(requests.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let (head, body) = next_response(&mut stream, &mut buf, true).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.is_empty());
        let (_, body) = next_response(&mut stream, &mut buf, false).await;
        assert!(body == bytes[5..CHUNK + 1]);

        // A body some layer re-encoded is no longer the region's bytes: it goes as it is.
        let addr = start(file, true).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(request("GET", 0, CHUNK).as_bytes())
            .await
            .unwrap();
        let (_, body) = next_response(&mut stream, &mut Vec::new(), false).await;
        assert!(body.len() == CHUNK && body.iter().all(|&b| b == b'x'));
    }
}
