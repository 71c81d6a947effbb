# nbgrader configuration of the sglrp_widgets course (see notebooks/README.md).
# Run every nbgrader command from this folder: `cd notebooks/course`.
c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file

c.CourseDirectory.course_id = "sglrp_widgets"
# the explanations take about a minute on a laptop CPU; leave room for slow machines
c.ExecutePreprocessor.timeout = 600
# a student's stray output must not blow up the gradebook
c.LimitOutput.max_lines = 200
