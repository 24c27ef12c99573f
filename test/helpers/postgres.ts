/** A real PostgreSQL per test or test file: the bench driver, torn down through the test's teardown. */
export { type TestPostgres, type Teardown, freshDatabase, postgresBinDir, startPostgres } from '../../bench/drivers/postgres.js';
