//! The report's JSON reads back what it wrote: unknown values (NaN, e.g. `kl_to_input` of a
//! `--final-only` report) are written as `null` and read back as NaN (issue 11, item 5: the reader
//! refused such files).

mod common;

use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_model::report::LensReport;
use lens_tests::fixture::{RandomGpt2, TempDir};

#[test]
fn a_final_only_report_reads_back() {
    let (_hf, bundle) = common::make_bundle("report-json", &RandomGpt2::tiny(41));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("one two three four five", false).unwrap();
    let report = engine.run_ids(&ids, &LensOptions { final_only: true, k: 3, ..LensOptions::default() }, &Progress::default()).unwrap();
    assert!(report.metrics.kl_to_input.iter().flatten().all(|x| x.is_nan()), "kl_to_input is unknown under --final-only");
    let dir = TempDir::new("report-json").unwrap();
    let path = dir.path().join("r.json");
    report.write_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"kl_to_input\":[[null"), "NaN is written as null");
    let back = LensReport::read_json(&path).unwrap();
    assert!(back.metrics.kl_to_input.iter().flatten().all(|x| x.is_nan()));
    assert_eq!(back.metrics.kl_to_final, report.metrics.kl_to_final);
    assert_eq!(back.metrics.top1_id, report.metrics.top1_id);
    assert_eq!(back.top_k, report.top_k);
    assert_eq!(back.tokens, report.tokens);

    // A full report reads back unchanged.
    let full = engine.run_ids(&ids, &LensOptions { k: 3, ..LensOptions::default() }, &Progress::default()).unwrap();
    full.write_json(&path).unwrap();
    let back = LensReport::read_json(&path).unwrap();
    assert_eq!(back.metrics, full.metrics);
}
