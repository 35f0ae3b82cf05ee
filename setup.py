"""Maps the `dreammask.*` import namespace onto the repository's fixed top-level folders."""

from setuptools import find_namespace_packages, setup

TOP_LEVEL = ("shared", "services", "trainer")

packages, package_dir = [], {}
for top in TOP_LEVEL:
    package_dir[f"dreammask.{top}"] = top
    packages.append(f"dreammask.{top}")
    # Namespace discovery: data folders (data/vocab/, configs/, static/docs/) are listed too, so their files
    # ship as package data and setuptools has no "package would be ignored" warnings to print.
    packages += [f"dreammask.{top}.{sub}" for sub in find_namespace_packages(top, exclude=["*__pycache__*"])
                 if "__pycache__" not in sub]

setup(
    packages=packages,
    package_dir=package_dir,
    # Recursive patterns: data folders (data/vocab/, configs/) are not packages themselves.
    package_data={"": [f"**/*.{ext}" for ext in ("txt", "json", "yaml", "yml", "md", "csv", "tsv", "html", "css", "js")]
                  + ["**/static/docs/*"]},  # the API's Swagger UI / ReDoc assets (no CDN)
    include_package_data=True,
)
