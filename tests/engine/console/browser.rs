//! The console in a real headless browser (Debian chromium + chromedriver, driven by
//! fantoccini): see `the_console_works_in_a_real_browser`.
