package postgres

// IntakeSeqSQL is IntakeSeq's query, for the test that checks it uses its index.
const IntakeSeqSQL = intakeSeqSQL
