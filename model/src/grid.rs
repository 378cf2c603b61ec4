//! [`Grid`]: the report's per-cell tables, rows (sites, or attribution components) by columns
//! (positions), every row as long as the others. In JSON a grid is the nested array it always
//! was (`[[…], […]]`); an unknown float is `null` there and NaN here, and reads back.

use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LensError, Result};

/// A table of `n_rows × n_cols` cells, stored by row; all rows have `n_cols` cells. Reading a
/// cell goes through [`Grid::get`] (`None` outside); the rows can be read as a slice (`Deref`).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid<T> {
    rows: Vec<Vec<T>>,
}

impl<T> Default for Grid<T> {
    fn default() -> Self {
        Self { rows: Vec::new() }
    }
}

impl<T> Grid<T> {
    /// A grid of these rows; rows of different lengths are an error.
    pub fn from_rows(rows: Vec<Vec<T>>) -> Result<Self> {
        if let Some(first) = rows.first()
            && let Some((i, bad)) = rows.iter().enumerate().find(|(_, r)| r.len() != first.len())
        {
            return Err(LensError::invalid(format!("grid row {i} has {} cells, row 0 has {}", bad.len(), first.len())));
        }
        Ok(Self { rows })
    }

    /// The grid whose cell `(row, col)` is `f(row, col)`.
    pub fn from_fn(n_rows: usize, n_cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        Self { rows: (0..n_rows).map(|r| (0..n_cols).map(|c| f(r, c)).collect()).collect() }
    }

    /// Cell `(row, col)`: for the report's metrics `(site, pos)`.
    pub fn get(&self, row: usize, col: usize) -> Option<&T> {
        self.rows.get(row)?.get(col)
    }

    /// One row (a site's cells in position order).
    pub fn row(&self, row: usize) -> Option<&[T]> {
        self.rows.get(row).map(Vec::as_slice)
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Number of columns (0 for a grid without rows).
    pub fn n_cols(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }

    /// Every cell, row by row.
    pub fn cells(&self) -> impl Iterator<Item = &T> {
        self.rows.iter().flatten()
    }

    /// Column `col` top to bottom (a position's cells in site order); `None` outside.
    pub fn column(&self, col: usize) -> Option<Vec<&T>> {
        self.rows.iter().map(|r| r.get(col)).collect()
    }

    /// Keeps the first `n` columns.
    pub fn keep_cols(&mut self, n: usize) {
        for r in &mut self.rows {
            r.truncate(n);
        }
    }

    /// Appends `other`'s columns after this grid's (same number of rows, or this grid empty).
    pub fn append_cols(&mut self, other: Self) -> Result<()> {
        if self.rows.is_empty() {
            self.rows = other.rows;
            return Ok(());
        }
        if other.rows.len() != self.rows.len() {
            return Err(LensError::invalid(format!("cannot join a grid of {} rows to one of {}", other.rows.len(), self.rows.len())));
        }
        for (a, b) in self.rows.iter_mut().zip(other.rows) {
            a.extend(b);
        }
        Ok(())
    }

    /// The grid with rows and columns swapped.
    pub fn transposed(&self) -> Self
    where
        T: Clone,
    {
        let n = self.n_cols();
        Self { rows: (0..n).map(|c| self.rows.iter().filter_map(|r| r.get(c).cloned()).collect()).collect() }
    }

    /// Checks the shape: `n_rows` rows of `n_cols` cells (`what` names the grid in the error).
    pub fn check_shape(&self, what: &str, n_rows: usize, n_cols: usize) -> Result<()> {
        if self.n_rows() != n_rows || (n_rows > 0 && self.n_cols() != n_cols) {
            return Err(LensError::invalid(format!("{what} is {} × {}, expected {n_rows} × {n_cols}", self.n_rows(), self.n_cols())));
        }
        Ok(())
    }
}

impl<T> Deref for Grid<T> {
    type Target = [Vec<T>];
    fn deref(&self) -> &[Vec<T>] {
        &self.rows
    }
}

impl<'a, T> IntoIterator for &'a Grid<T> {
    type Item = &'a Vec<T>;
    type IntoIter = std::slice::Iter<'a, Vec<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

impl<T: Serialize> Serialize for Grid<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.rows.serialize(s)
    }
}

impl<'de, T: Cell> Deserialize<'de> for Grid<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let rows = Vec::<Vec<T::Json>>::deserialize(d)?;
        let rows = rows.into_iter().map(|r| r.into_iter().map(T::from_json).collect()).collect();
        Self::from_rows(rows).map_err(serde::de::Error::custom)
    }
}

/// A grid cell as JSON holds it: floats may be `null` (unknown, NaN here); everything else is
/// read as written.
pub trait Cell: Sized {
    /// The JSON form.
    type Json: for<'a> Deserialize<'a>;
    /// The cell of a JSON value.
    fn from_json(j: Self::Json) -> Self;
}

macro_rules! exact_cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            type Json = $t;
            fn from_json(j: $t) -> $t {
                j
            }
        }
    )*};
}
exact_cell!(u32, bool, Option<u32>, Option<f64>, Vec<u32>);

impl Cell for f32 {
    type Json = Option<f32>;
    fn from_json(j: Option<f32>) -> f32 {
        j.unwrap_or(f32::NAN)
    }
}
impl Cell for f64 {
    type Json = Option<f64>;
    fn from_json(j: Option<f64>) -> f64 {
        j.unwrap_or(f64::NAN)
    }
}
impl Cell for Vec<f32> {
    type Json = Vec<Option<f32>>;
    fn from_json(j: Vec<Option<f32>>) -> Vec<f32> {
        j.into_iter().map(f32::from_json).collect()
    }
}
impl Cell for Vec<f64> {
    type Json = Vec<Option<f64>>;
    fn from_json(j: Vec<Option<f64>>) -> Vec<f64> {
        j.into_iter().map(f64::from_json).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_is_the_nested_array_and_null_reads_back_as_nan() {
        let g = Grid::from_rows(vec![vec![1.0f64, f64::NAN], vec![3.0, 4.0]]).unwrap();
        let text = serde_json::to_string(&g).unwrap();
        assert_eq!(text, "[[1.0,null],[3.0,4.0]]");
        let back: Grid<f64> = serde_json::from_str(&text).unwrap();
        assert!(back.get(0, 1).unwrap().is_nan());
        assert_eq!(back.get(1, 0), Some(&3.0));
        assert_eq!(back.get(2, 0), None);
        assert_eq!(back.get(0, 2), None);
    }

    #[test]
    fn ragged_rows_are_refused() {
        assert!(Grid::from_rows(vec![vec![1u32], vec![2, 3]]).is_err());
        let e = serde_json::from_str::<Grid<u32>>("[[1],[2,3]]").unwrap_err().to_string();
        assert!(e.contains("row 1 has 2 cells"), "{e}");
        let mut a = Grid::from_rows(vec![vec![1u32], vec![2]]).unwrap();
        assert!(a.append_cols(Grid::from_rows(vec![vec![3u32]]).unwrap()).is_err());
        a.append_cols(Grid::from_rows(vec![vec![3u32], vec![4]]).unwrap()).unwrap();
        assert_eq!(a.column(1), Some(vec![&3, &4]));
        assert_eq!(a.transposed().row(1), Some(&[3u32, 4][..]));
        a.keep_cols(1);
        assert_eq!((a.n_rows(), a.n_cols()), (2, 1));
    }
}
