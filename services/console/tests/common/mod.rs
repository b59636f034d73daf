//! A console server on a loopback port, on one test backend, with an SDK client for the admin.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use plinth_sdk::Client;
use plinth_shared::Shared;
use plinth_shared::testkit::TestBackend;
use plinth_types::ErrorCode;

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) shared: Shared,
    pub(crate) admin: Client,
    pub(crate) backend: TestBackend,
}

impl Server {
    pub(crate) async fn start(backend: TestBackend) -> Server {
        let shared = Shared::open(backend.config.clone(), &backend.admin_token)
            .await
            .expect("open the shared state");
        Server::serve(backend, shared).await
    }

    /// Serves an already opened state: a second replica on the same backend, for instance.
    pub(crate) async fn serve(backend: TestBackend, shared: Shared) -> Server {
        let (routes, api) = plinth_console::router(shared.clone()).split_for_parts();
        let app = plinth_shared::http::app(routes, api, &shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let serving = shared.clone();
        tokio::spawn(async move {
            plinth_shared::http::serve(listener, app, serving, std::future::pending()).await
        });
        let admin = client(&url, &backend.admin_token);
        Server {
            url,
            shared,
            admin,
            backend,
        }
    }

    pub(crate) fn client(&self, token: &str) -> Client {
        client(&self.url, token)
    }

    pub(crate) fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

pub(crate) fn client(url: &str, token: &str) -> Client {
    Client::builder()
        .base_url(url)
        .token(token)
        .max_retries(0)
        .build()
        .expect("client")
}

/// Returns the code of a failed SDK call, panicking on success.
pub(crate) fn code_of<T: std::fmt::Debug>(result: Result<T, plinth_sdk::Error>) -> ErrorCode {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err
            .code()
            .unwrap_or_else(|| panic!("no known code in {err:?}")),
    }
}
