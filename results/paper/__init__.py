"""The paper's published numbers (Tables 2-5) as CSV files: data only, see README.md here."""
