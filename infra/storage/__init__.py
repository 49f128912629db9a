"""Data stores: the S3 data lake (`lake`) and FSx for Lustre linked to it (`lustre`)."""
