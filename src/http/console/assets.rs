//! The console's stylesheet and script, compiled into the binary (nothing is fetched from
//! anywhere at run time) and served with a long cache lifetime.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/app.css", web::get().to(css))
        .route("/assets/app.js", web::get().to(js));
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}
