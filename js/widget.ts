// Placeholder entry; the views land with the widgets issue.
export default { render() {} };
