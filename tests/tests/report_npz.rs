//! The report as `.npz` (issue 11, item 14: the JSON gives numpy `dtype=object` arrays because of its
//! `null`s, and ids without text). Read back with an independent reader (`ndarray-npy`) and, for the
//! string arrays it does not read, by decoding numpy's `<U` format here.

mod common;

use std::io::Read;

use lens_model::LensOptions;
use lens_model::error::Progress;
use lens_tests::fixture::{RandomGpt2, TempDir};
use ndarray::{Array1, Array2, Array3};
use ndarray_npy::NpzReader;

/// A `<U` string array from the archive: its shape and strings.
fn strings(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<String>) {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name(&format!("{name}.npy")).unwrap().read_to_end(&mut bytes).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data aligned to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let width: usize = header.split("'<U").nth(1).unwrap().split('\'').next().unwrap().parse().unwrap();
    let dims = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = dims.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().unwrap()).collect();
    let data = &bytes[10 + hlen..];
    let out = data
        .chunks(width * 4)
        .map(|c| c.chunks(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).take_while(|&u| u != 0).map(|u| char::from_u32(u).unwrap()).collect())
        .collect();
    (shape, out)
}

#[test]
fn the_report_as_npz_reads_back_in_numpy_layout() {
    let (_hf, bundle) = common::make_bundle("npz", &RandomGpt2::tiny(43));
    let mut engine = common::open(&bundle);
    let ids = engine.tokenize("The cat sat on the mat.", false).unwrap();
    let pin = engine.tokenizer.token_id(" mat").unwrap();
    let cat = vec![engine.tokenizer.token_id(" cat").unwrap(), engine.tokenizer.token_id("cat").unwrap()];
    let groups = vec![lens_model::TokenGroup { name: "cat".into(), token_ids: cat }];
    let r = engine.run_ids(&ids, &LensOptions { subblocks: true, k: 4, pinned: vec![pin], groups, ..LensOptions::default() }, &Progress::default()).unwrap();
    let dir = TempDir::new("npz").unwrap();
    let path = dir.path().join("r.npz");
    let text = |id: u32| String::from_utf8_lossy(&engine.tokenizer.token_bytes(id)).into_owned();
    lens_model::output::npz::write_report(&r, &path, &text).unwrap();
    assert!(!dir.path().join("r.npz.partial").exists());

    let (s, p) = (r.sites.len(), r.n_pos());
    let mut npz = NpzReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let top1: Array2<i64> = npz.by_name("top1_id").unwrap();
    assert_eq!(top1.dim(), (s, p));
    for si in 0..s {
        for pi in 0..p {
            assert_eq!(top1[[si, pi]], i64::from(r.metrics.top1_id[si][pi]));
        }
    }
    let kl: Array2<f64> = npz.by_name("kl_to_final").unwrap();
    assert_eq!(kl[[0, 2]], r.metrics.kl_to_final[0][2]);
    // Unknown values: −1 ranks and NaN losses at the last position, never a hole.
    let rank_next: Array2<i64> = npz.by_name("rank_of_next").unwrap();
    let nll: Array2<f64> = npz.by_name("nll_next").unwrap();
    assert!((0..s).all(|si| rank_next[[si, p - 1]] == -1 && nll[[si, p - 1]].is_nan()));
    assert_eq!(rank_next[[s - 1, 0]], i64::from(r.metrics.rank_of_next[s - 1][0].unwrap()));
    let top_k: Array3<i64> = npz.by_name("top_k_id").unwrap();
    assert_eq!(top_k.dim(), (s, p, 4));
    let probs: Array3<f64> = npz.by_name("top_k_prob").unwrap();
    assert_eq!(probs[[1, 3, 2]], r.top_k.probs[1][3][2]);
    let logits: Array3<f32> = npz.by_name("top_k_logit").unwrap();
    assert_eq!(logits[[1, 3, 0]], r.top_k.logits[1][3][0]);
    let pinned_rank: Array3<i64> = npz.by_name("pinned_rank").unwrap();
    assert_eq!(pinned_rank.dim(), (1, s, p));
    let tok_ids: Array1<i64> = npz.by_name("tokens_id").unwrap();
    assert_eq!(tok_ids.to_vec(), ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>());

    // Strings: exact token text beside the display text, top-1 and top-k readable without a tokenizer.
    let (shape, decoded) = strings(&path, "tokens_decoded");
    assert_eq!(shape, vec![p]);
    assert_eq!(decoded[1], " cat");
    assert_eq!(strings(&path, "tokens_text").1[1], "␣cat");
    let (shape, top1_text) = strings(&path, "top1_text");
    assert_eq!(shape, vec![s, p]);
    assert_eq!(top1_text[(s - 1) * p + 2], text(r.metrics.top1_id[s - 1][2]));
    let (shape, sites) = strings(&path, "sites");
    assert_eq!((shape, sites), (vec![s], r.sites.clone()));
    assert_eq!(strings(&path, "pinned_text").1, vec![" mat".to_string()]);
    // Prediction depth and token groups.
    let depth: Array1<i64> = npz.by_name("prediction_depth").unwrap();
    assert_eq!(depth.to_vec(), r.metrics.prediction_depth.iter().map(|&d| i64::from(d)).collect::<Vec<_>>());
    let group_prob: Array3<f64> = npz.by_name("group_prob").unwrap();
    assert_eq!(group_prob.dim(), (1, s, p));
    assert_eq!(group_prob[[0, 2, 3]], r.groups[0].prob[2][3]);
    let best: Array3<i64> = npz.by_name("group_best_rank").unwrap();
    assert_eq!(best[[0, s - 1, 1]], i64::from(r.groups[0].best_rank[s - 1][1]));
    assert_eq!(strings(&path, "group_name").1, vec!["cat".to_string()]);
    assert_eq!(strings(&path, "group_tokens").1, vec![" cat|cat".to_string()]);
    let (shape, schema) = strings(&path, "schema");
    assert_eq!((shape, schema), (vec![], vec![r.schema.clone()]));
}
