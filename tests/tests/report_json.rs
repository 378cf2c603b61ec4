//! The report's JSON reads back what it wrote: unknown values (NaN, e.g. `kl_to_input` of a
//! `--final-only` report) are written as `null` and read back as NaN (issue 11, item 5: the reader
//! refused such files).

mod common;

use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_model::output::report::LensReport;
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

/// The grids are typed (`Grid<T>`: every row as long as the others) and a report's grids all have
/// its shape: a file whose grids do not fit its sites and tokens is refused by name, never read
/// into a report that panics or shows wrong cells later (issue 11, what to build 3).
#[test]
fn a_report_whose_grids_do_not_fit_is_refused() {
    let (_hf, bundle) = common::make_bundle("report-shape", &RandomGpt2::tiny(42));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("one two three four five", false).unwrap();
    let pin = engine.tokenizer.token_id(" two").unwrap();
    let report = engine.run_ids(&ids, &LensOptions { k: 3, pinned: vec![pin], ..LensOptions::default() }, &Progress::default()).unwrap();
    report.check_shapes().unwrap();
    assert_eq!(report.metrics.top1_id.get(2, 1), Some(&report.metrics.top1_id[2][1]));
    assert_eq!(report.metrics.top1_id.get(report.sites.len(), 0), None);
    let dir = TempDir::new("report-shape").unwrap();
    let path = dir.path().join("r.json");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(&report).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        LensReport::read_json(&path).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(edit(&|_| {}), Ok(()));
    // A ragged grid: one row a cell short.
    let e = edit(&|v| {
        v["metrics"]["entropy"][1].as_array_mut().unwrap().pop();
    })
    .unwrap_err();
    assert!(e.contains("row 1 has 4 cells, row 0 has 5"), "{e}");
    // A grid of another shape than the sites × tokens.
    let e = edit(&|v| {
        v["metrics"]["kl_to_final"].as_array_mut().unwrap().pop();
    })
    .unwrap_err();
    assert!(e.contains("metrics.kl_to_final is") && e.contains("expected"), "{e}");
    let e = edit(&|v| {
        v["tokens"].as_array_mut().unwrap().pop();
    })
    .unwrap_err();
    assert!(e.contains("not a consistent logit-lens report"), "{e}");
    let e = edit(&|v| {
        v["pinned"]["rank"][0][0].as_array_mut().unwrap().push(serde_json::json!(1));
    })
    .unwrap_err();
    assert!(e.contains("row 1 has 5 cells, row 0 has 6") || e.contains("pinned.rank"), "{e}");
}

/// Prediction depth (issue 15, item 4): per position, the first site from which the top-1 stays
/// the final top-1, checked against its definition cell by cell; stored in the JSON and derived
/// for a report written before it existed.
#[test]
fn prediction_depth_is_the_first_site_from_which_the_top1_stays_final() {
    let (_hf, bundle) = common::make_bundle("report-depth", &RandomGpt2::tiny(43));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("The cat sat on the mat and the dog sat on the rug.", false).unwrap();
    let report = engine.run_ids(&ids, &LensOptions { subblocks: true, k: 3, ..LensOptions::default() }, &Progress::default()).unwrap();
    let m = &report.metrics;
    let n_sites = report.sites.len();
    assert_eq!(m.prediction_depth.len(), ids.len());
    let mut below_final = 0;
    for p in 0..ids.len() {
        let fin = m.top1_id[n_sites - 1][p];
        // Naive: the smallest s with top1[s'][p] == fin for every s' >= s.
        let want = (0..n_sites).find(|&s| (s..n_sites).all(|t| m.top1_id[t][p] == fin)).unwrap();
        assert_eq!(m.prediction_depth[p] as usize, want, "position {p}");
        below_final += usize::from(want < n_sites - 1);
    }
    assert!(below_final > 0, "some position settles before the last site");
    // Written, read back; a report without it derives the same.
    let dir = TempDir::new("report-depth").unwrap();
    let path = dir.path().join("r.json");
    report.write_json(&path).unwrap();
    assert_eq!(LensReport::read_json(&path).unwrap().metrics.prediction_depth, m.prediction_depth);
    let mut v = serde_json::to_value(&report).unwrap();
    v["metrics"].as_object_mut().unwrap().remove("prediction_depth");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let old = LensReport::read_json(&path).unwrap();
    assert!(old.metrics.prediction_depth.is_empty());
    assert_eq!(old.prediction_depth(), m.prediction_depth);
}

/// Token groups (issue 15, item 3): a group's probability is the sum of its tokens' own
/// probabilities (the same tokens pinned) and its best rank their smallest rank, at every cell;
/// reports of consecutive position ranges join into the whole; the JSON reads back.
#[test]
fn token_groups_sum_their_tokens() {
    let (_hf, bundle) = common::make_bundle("report-groups", &RandomGpt2::tiny(44));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("The cat sat on the mat and the dog sat on the rug.", false).unwrap();
    let variants = engine.tokenizer.word_variants("cat");
    assert!(variants.len() >= 2, "{variants:?}");
    assert!(variants.iter().any(|(t, _)| t == " cat") && variants.iter().all(|(t, id)| engine.tokenizer.token_id(t) == Some(*id)));
    let cat: Vec<u32> = variants.iter().map(|v| v.1).collect();
    let dog = vec![engine.tokenizer.token_id(" dog").unwrap(), engine.tokenizer.token_id(" rug").unwrap()];
    let groups =
        vec![lens_model::TokenGroup { name: "cat".into(), token_ids: cat.clone() }, lens_model::TokenGroup { name: "dog".into(), token_ids: dog.clone() }];
    let pinned: Vec<u32> = cat.iter().chain(&dog).copied().collect();
    let opts = LensOptions { subblocks: true, k: 3, pinned, groups, ..LensOptions::default() };
    let report = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    let pin = report.pinned.as_ref().unwrap();
    assert_eq!(report.groups.len(), 2);
    let mut first = 0;
    for g in &report.groups {
        let n = g.tokens.len();
        for s in 0..report.sites.len() {
            for p in 0..ids.len() {
                let sum: f64 = (first..first + n).map(|i| pin.prob[i][s][p]).sum();
                let best = (first..first + n).map(|i| pin.rank[i][s][p]).min().unwrap();
                assert!((g.prob[s][p] - sum).abs() < 1e-12, "{} site {s} pos {p}: {} vs {sum}", g.name, g.prob[s][p]);
                assert_eq!(g.best_rank[s][p], best, "{} site {s} pos {p}", g.name);
            }
        }
        first += n;
    }
    // Pieces join into the whole.
    let trace = engine.trace(&ids).unwrap();
    let mut joined = engine.lens_range(&ids, &trace, &opts, 0..5, &Progress::default()).unwrap();
    joined.append_positions(engine.lens_range(&ids, &trace, &opts, 5..ids.len(), &Progress::default()).unwrap()).unwrap();
    assert_eq!(joined.groups, report.groups);
    // JSON round trip; a token repeated in a group is refused.
    let dir = TempDir::new("report-groups").unwrap();
    let path = dir.path().join("r.json");
    report.write_json(&path).unwrap();
    assert_eq!(LensReport::read_json(&path).unwrap().groups, report.groups);
    let twice = LensOptions { groups: vec![lens_model::TokenGroup { name: "x".into(), token_ids: vec![dog[0], dog[0]] }], ..LensOptions::default() };
    let e = engine.run_ids(&ids, &twice, &Progress::default()).unwrap_err().to_string();
    assert!(e.contains("twice"), "{e}");
}
