//! Render tests on ratatui's test backend: each panel, an empty pool, an open
//! breaker, 200 workers, and screens smaller than 80×24.
