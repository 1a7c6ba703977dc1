//! `GET /health` (the server answers: the store DB opened at startup) and
//! `GET /version`.

use actix_web::HttpResponse;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

pub async fn version() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(concat!("larder-server ", env!("CARGO_PKG_VERSION"), "\n"))
}
